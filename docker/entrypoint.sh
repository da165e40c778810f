#!/bin/sh
# Container entry point.
#
#   (no arguments)        migrate the database to head, then serve on 0.0.0.0:$PORT
#   --workers 4 ...       the same, with these options added to `chat-store serve`
#   chat-store users ...  anything else runs as given, without migrating first
#                         (e.g. `docker compose run --rm app chat-store users create ...`)
set -eu

case "${1:-}" in
    "" | -*)
        chat-store migrate
        exec chat-store serve --no-migrate --host 0.0.0.0 --port "${PORT:-8000}" "$@"
        ;;
esac

exec "$@"
