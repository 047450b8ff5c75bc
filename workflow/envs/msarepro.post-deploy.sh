#!/usr/bin/env bash
# Runs inside the new conda environment, in the workflow's directory (the clone): install msarepro from it.
set -euo pipefail
pip install --no-deps -e "$(pwd)"
