#!/usr/bin/env bash
# Prints the packages an image holds, from the SBOM its build wrote (/usr/share/slc/sbom.cdx.json,
# deploy/images/sbom-write.sh): one line each, `python NAME VERSION` or `debian NAME VERSION`,
# sorted. `--json` prints the whole CycloneDX document instead.
#
#   deploy/images/sbom.sh skin-lesion-classifier
#   deploy/images/sbom.sh --json slc-rabbitmq:3.10-bookworm > rabbitmq.cdx.json
set -euo pipefail
json=0
if [ "${1:-}" = --json ]; then json=1; shift; fi
image=${1:?usage: deploy/images/sbom.sh [--json] IMAGE}
sbom=$(mktemp)
container=$(docker create "$image")
trap 'docker rm -f "$container" >/dev/null; rm -f "$sbom"' EXIT
docker cp --quiet "$container:/usr/share/slc/sbom.cdx.json" "$sbom" 2>/dev/null \
  || { echo "$image has no /usr/share/slc/sbom.cdx.json (built before SBOMs were written?)" >&2; exit 1; }
if [ "$json" = 1 ]; then cat "$sbom"; exit 0; fi
python3 - "$sbom" <<'PY'
import json
import sys

with open(sys.argv[1]) as f:
    components = json.load(f).get("components", [])
kinds = {"pypi": "python", "deb": "debian"}
lines = set()
for component in components:
    kind = component.get("purl", "pkg:other/").split(":", 1)[1].split("/", 1)[0]
    lines.add(f"{kinds.get(kind, kind)} {component['name']} {component.get('version', '')}")
print("\n".join(sorted(lines)))
PY
