#!/usr/bin/env bash
# Builds one image of this commit twice, the second time with --no-cache, and compares the
# package lists of their SBOMs (deploy/images/sbom.sh). Run on demand (`make images-reproducible`),
# not by `make test`: a cold build of the serving image takes minutes, the trainer's longer.
#
#   deploy/images/sbom-compare.sh                         # Dockerfile, target serving
#   TARGET=trainer deploy/images/sbom-compare.sh
#   DOCKERFILE=deploy/images/rabbitmq/Dockerfile TARGET= deploy/images/sbom-compare.sh
#
# BASE_IMAGE (the app images' base; default: the air-gapped slc-python:3.11-bookworm, which
# deploy/images/build-bases.sh makes), DEBIAN_BASE and CA_BUNDLE are passed on as build
# arguments. The base images themselves are inputs here, not rebuilt. Exit status 0 when the lists
# are the same, 1 when they differ; the last line is JSON.
set -euo pipefail
cd "$(dirname "$0")/../.."
DOCKERFILE=${DOCKERFILE:-Dockerfile}
TARGET=${TARGET-serving}
BASE_IMAGE=${BASE_IMAGE:-${SLC_AIRGAP_PYTHON_IMAGE:-slc-python:3.11-bookworm}}
DEBIAN_BASE=${DEBIAN_BASE:-${SLC_AIRGAP_DEBIAN_IMAGE:-slc-debian:bookworm}}
CA_BUNDLE=${CA_BUNDLE:-${SLC_CA_BUNDLE:-deploy/images/ca/none.pem}}
image_dir=$(basename "$(dirname "$DOCKERFILE")")
[ "$image_dir" != . ] || image_dir=app
tag=slc-sbom-compare:$image_dir-${TARGET:-image}
out=$(mktemp -d)
build() {
  docker build --quiet "$@" -f "$DOCKERFILE" ${TARGET:+--target "$TARGET"} \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg PYTHON_BASE="$BASE_IMAGE" \
    --build-arg DEBIAN_BASE="$DEBIAN_BASE" --build-arg CA_BUNDLE="$CA_BUNDLE" . >/dev/null
}
start=$(date +%s)
build -t "$tag-a"
first_s=$(( $(date +%s) - start ))
start=$(date +%s)
build --no-cache -t "$tag-b"
second_s=$(( $(date +%s) - start ))
deploy/images/sbom.sh "$tag-a" > "$out/a.txt"
deploy/images/sbom.sh "$tag-b" > "$out/b.txt"
status=0
python3 - "$out/a.txt" "$out/b.txt" "$DOCKERFILE" "${TARGET:-}" "$first_s" "$second_s" <<'PY' || status=$?
import json
import sys

first, second = (open(path).read().split("\n") for path in sys.argv[1:3])
first, second = {line for line in first if line}, {line for line in second if line}
only_first, only_second = sorted(first - second), sorted(second - first)
for line in only_first:
    print(f"- {line}  (first build only)")
for line in only_second:
    print(f"+ {line}  (second build only)")
count = lambda lines, kind: sum(line.startswith(kind + " ") for line in lines)  # noqa: E731
result = {
    "dockerfile": sys.argv[3],
    "target": sys.argv[4],
    "same": first == second,
    "packages": len(first),
    "python": count(first, "python"),
    "debian": count(first, "debian"),
    "differing": len(only_first) + len(only_second),
    "build_s": [int(sys.argv[5]), int(sys.argv[6])],
}
print(("the same packages and versions" if result["same"] else "the package lists differ") + ":")
print(json.dumps(result))
sys.exit(0 if result["same"] else 1)
PY
rm -rf "$out"
docker image rm "$tag-a" "$tag-b" >/dev/null 2>&1 || true
exit $status
