#!/usr/bin/env bash
# The test command: builds .venv if needed, then lint (ruff), type-check (mypy), the docs (mkdocs) and tests (pytest).
# Extra arguments go to pytest (e.g. --runslow, -k align).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh" dev
cd "$root"
py="${PARTIALFACE_VENV:-$root/.venv}/bin"
echo "== ruff"; "$py/ruff" check partialface tests benchmarks
echo "== mypy"; "$py/mypy" partialface benchmarks
# the docs (mkdocs.yml): warnings are errors, so a broken docstring or a dead internal link fails here
echo "== docs"; "$py/mkdocs" build --strict --site-dir "${TMPDIR:-/tmp}/partialface-site"
echo "== pytest"; "$py/python" -m pytest -q "$@"
