#!/bin/sh
set -e
printf '#!/bin/sh\necho "demo-marker: %s"\n' "$GREETING" >/usr/local/bin/demo-marker
chmod 0755 /usr/local/bin/demo-marker
