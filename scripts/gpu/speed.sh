# How fast can the ladder's 6 concurrent VGG runs go? Epoch time of 6 runs at once under each setting, 8 epochs
# each, one setting after the other (the ladder's gen1 ran 5-7 s/epoch plain, bf16, channels_last, batch 128).
#   T=... bash scripts/gpu/speed.sh        # results: the seconds column of each run's log.csv
set -u
RUNS=/tmp/runs/speed
rm -rf "$RUNS"
source scripts/gpu/common.sh
six() {  # six NAME ARGS...: 6 runs of one setting at once, then wait
  local name=$1; shift
  for s in 0 1 2 3 4 5; do job ${name}_$s 170 --arch vgg --epochs 8 --seed $s --report-splits PublicTest "$@"; done
  wait_all
  python3 - "$RUNS" "$name" <<'PY'
import csv, glob, statistics, sys
rows = [list(csv.DictReader(open(f))) for f in sorted(glob.glob(f"{sys.argv[1]}/{sys.argv[2]}_*/log.csv"))]
late = [float(r["seconds"]) for log in rows for r in log[3:]]
print(f"{sys.argv[2]}: {len(rows)} runs, epochs 4-8: median {statistics.median(late):.2f} s/epoch" if late
      else f"{sys.argv[2]}: no run finished 4 epochs")
PY
}
six compile --compile
six graphs --compile --compile-mode reduce-overhead
six bs256 --batch-size 256 --lr 0.1
grep -h "Error\|error" $RUNS/*.log | sort | uniq -c | head -5
