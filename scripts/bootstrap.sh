#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install partialface into it.
# Re-runs are cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PARTIALFACE_VENV:-$root/.venv}"
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
stamp="$venv/.partialface-stamp-${1:-run}"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    extra=""
    [ "${1:-}" = "dev" ] && extra="[dev,dlib,sface,serve,postgres]"
    "$venv/bin/python" -m pip install -q -e "$root$extra"
    echo "$want" > "$stamp"
fi
