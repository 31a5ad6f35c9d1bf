#!/usr/bin/env bash
# The main job: builds .venv if needed, then runs `partialface demo` (extra arguments are passed on).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "${PARTIALFACE_VENV:-$root/.venv}/bin/partialface" demo "$@"
