#!/bin/sh
# Container health: vLLM's /health answers 200 (no API key needed for /health).
exec /opt/qtune/.venv/bin/python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:${QTUNE_PORT:-8000}/health', timeout=4).status == 200 else 1)"
