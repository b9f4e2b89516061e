# Make the working tree that travels to a lent GPU small enough for the FER2013 tars (the device tool sends
# tracked + untracked-not-ignored files, at most 64 MiB, and the three tars alone are 58 MiB):
#
#   bash scripts/gpu/slim_tree.sh on    # untrack the big files a training call never reads (docs/, the bundled
#                                       # weights) in the index only, and ignore them in .git/info/exclude
#   ... device run, carrying .gpudata/ ...
#   bash scripts/gpu/slim_tree.sh off   # track them again (index back to HEAD for those paths)
#
# Nothing on disk changes; only git's index and .git/info/exclude do.
set -eu
cd "$(dirname "$0")/../.."
PATHS=(docs ferkit/weights/reports ferkit/app/samples benchmarks/results)
PATTERNS=(ferkit/weights/*.onnx ferkit/weights/*.pt)
EXCLUDE=.git/info/exclude
BEGIN="# slim_tree.sh: begin" END="# slim_tree.sh: end"
case "${1:-}" in
  on)
    mkdir -p .git/info && touch "$EXCLUDE"
    git rm -r -q --cached --ignore-unmatch "${PATHS[@]}" "${PATTERNS[@]}"
    { echo "$BEGIN"; for p in "${PATHS[@]}" "${PATTERNS[@]}"; do echo "/$p"; done; echo "$END"; } >> "$EXCLUDE"
    ;;
  off)
    sed -i "/^$BEGIN\$/,/^$END\$/d" "$EXCLUDE"
    git reset -q HEAD -- "${PATHS[@]}" "${PATTERNS[@]}"
    ;;
  *) echo "usage: slim_tree.sh on|off" >&2; exit 2 ;;
esac
git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1
