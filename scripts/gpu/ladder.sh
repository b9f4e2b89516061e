# The FER2013 accuracy ladder (issue 12), one stage per GPU call of < 10 minutes; each stage leaves all
# it made in /tmp/runs and packs it into $OUT (logs.tgz: every run's files but its checkpoints, logits and the
# teacher file included; one archive per run of its float16 weights, best on PublicTest first, while they fit the
# device tool's 64 MiB: scripts/gpu/pack_runs.py). Run from the repository root, data in .gpudata/:
#
#   bash scripts/gpu/ladder.sh gen1              # 6 diverse runs (VGG seeds, a mixup variant, ResNet-18),
#                                                # all with the FER+ auxiliary head; then their ensemble's
#                                                # flip-TTA probabilities -> teacher.npz
#   bash scripts/gpu/ladder.sh gen2 TEACHER.npz  # students distilled from teacher.npz: 3 VGGs ("born
#                                                # again") and 3 CPU-sized nets (fastnet, mobile, mobile_deep)
#   PREFIX=g4 SEED=30 bash scripts/gpu/ladder.sh students TEACHER.npz
#                                                # 6 diverse big students of TEACHER.npz (4 VGG, VGG + mixup,
#                                                # ResNet-18), then their ensemble -> teacher.npz for the next rung
#   PREFIX=g6 SEED=50 bash scripts/gpu/ladder.sh small TEACHER.npz
#                                                # 6 CPU-sized students of TEACHER.npz (the fast tier's candidates)
#   PREFIX=g5 SEED=40 bash scripts/gpu/ladder.sh mixed TEACHER.npz
#                                                # both tiers in one call: 4 big students (3 VGG, ResNet-18), their
#                                                # ensemble -> teacher.npz, and 2 CPU-sized ones (mobile, mobile_deep)
#   PREFIX=g8 SEED=90 T=250 bash scripts/gpu/ladder.sh resnets TEACHER.npz
#                                                # 3 ResNet-18 students (the int8 default's candidates), for the
#                                                # few minutes left of a session's GPU time
#   ARCHS="vgg_deep resnet18 resnet18 vgg vgg" PREFIX=fpg3 SEED=200 bash scripts/gpu/ladder.sh archs TEACHER.npz
#                                                # one student of TEACHER.npz per name in ARCHS, named
#                                                # ${PREFIX}_<arch without "18">_<i>, seeds SEED+i (w 0.5, T 1),
#                                                # then their ensemble -> teacher.npz; SMALL="fastnet_wide ..."
#                                                # adds CPU-sized students with the small nets' recipe (w 0.9,
#                                                # T 2, no mixup; fastnet_wide named wide), numbered on after
#                                                # ARCHS, not in the ensemble
#   PREFIX=g9 SEED=100 bash scripts/gpu/ladder.sh int8 TEACHER.npz
#                                                # the int8 tiers' candidates: 3 ResNet-18 for `default` (~11x fastnet's
#                                                # cost in int8) and 3 fastnet_wide for `fast` (~0.7x in int8);
#                                                # BIG=vgg: 3 VGGs instead of the ResNet-18s (~7x in int8)
#
# T (seconds, default 520) is each run's --time-limit; the runs share the GPU, so the epochs follow.
# SPEED: options for every run (default: none, as the committed runs were made). SPEED="--compile --compile-mode
# reduce-overhead" (CUDA graphs) ran 6 concurrent VGGs at 3.52 s/epoch instead of 5.24 (docs/results/ladder/speed.txt).
# MPS=1 runs the jobs under CUDA MPS where the machine allows it (common.sh).
# DATASET=ferplus runs any stage on FER+ (issue 17): 8 classes, the vote distributions as soft targets, no label
# smoothing (the recipe of docs/results.md's FER+ runs); gen1's runs are then named fpg1_*, so give the other
# stages a PREFIX of their own too, e.g. DATASET=ferplus PREFIX=fpg2 ... students .gpudata/teacher_fpg1.npz
# Ensembles and reports are then made on the CPU from the logits (python -m benchmarks.bench_accuracy).
set -u
STAGE=${1:?usage: ladder.sh gen1 | gen2 TEACHER.npz | students TEACHER.npz | small TEACHER.npz | mixed TEACHER.npz | resnets TEACHER.npz | int8 TEACHER.npz | archs TEACHER.npz}
T=${T:-520}
PREFIX=${PREFIX:-g4}
SEED=${SEED:-30}
GPU_CALL="${BIG:+BIG=$BIG }${ARCHS:+ARCHS=\"$ARCHS\" }${SMALL:+SMALL=\"$SMALL\" }T=$T PREFIX=$PREFIX SEED=$SEED MPS=${MPS:-0} SPEED=\"${SPEED:-}\" bash scripts/gpu/ladder.sh $*"
RUNS=/tmp/runs/$STAGE$PREFIX  # a warm machine keeps /tmp between calls: each stage packs only its own runs
rm -rf "$RUNS"
DATASET=${DATASET:-fer2013}
case "$DATASET" in
  fer2013) TAG="" ;;
  ferplus) TAG=fp; EXTRA="--dataset ferplus --targets soft --label-smoothing 0 ${EXTRA:-}" ;;
  *) echo "DATASET must be fer2013 or ferplus, got $DATASET" >&2; exit 2 ;;
esac
GPU_CALL="DATASET=$DATASET $GPU_CALL"
export EXTRA="${SPEED:-} ${EXTRA:-}"
source scripts/gpu/common.sh
# wait_report: wait for the stage's jobs, then print each run's summary line and its time-limit re-plans
wait_report() { wait_all; grep -h "^summary\|time limit" $RUNS/*.log; }
# teacher_in FILE: the students' teacher, copied beside the runs (removed before packing); sets KD
teacher_in() { cp "${1:?$STAGE needs a teacher file}" $RUNS/teacher_in.npz; KD="--teacher-probs $RUNS/teacher_in.npz"; }
# teacher_out GLOB...: the flip-TTA ensemble of the finished runs matching $RUNS/GLOB -> teacher.npz (back in logs.tgz)
teacher_out() {
  local members g; members=$(for g in "$@"; do for d in $RUNS/$g/; do [ -f "$d/logits.npz" ] && echo "$d"; done; done)
  timeout 90 python3 -m ferkit ensemble $members --tta flip --out $RUNS/teacher.npz 2>&1 | tee $RUNS/ensemble.log
}
# big_trio ARCH: three students of ARCH, seeds SEED..SEED+2, named ${PREFIX}_<arch without "18">_0..2
big_trio() {
  for i in 0 1 2; do
    job ${PREFIX}_${1%18}_$i $((T + 40)) --arch $1 --epochs 250 --time-limit $T --seed $((SEED + i)) $KD --distill-weight 0.5 --distill-temp 1
  done
}

if [ "$STAGE" = gen1 ]; then
  job ${TAG}g1_vgg_s0 $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 0
  job ${TAG}g1_vgg_s1 $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 1
  job ${TAG}g1_vgg_s2 $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 2
  job ${TAG}g1_vgg_mix $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 3 --mixup-alpha 0.5
  job ${TAG}g1_vgg_nols $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 4 --label-smoothing 0
  job ${TAG}g1_resnet $((T + 40)) --arch resnet18 --epochs 150 --time-limit $T --seed 5
  wait_report
  teacher_out "${TAG}g1_*"
elif [ "$STAGE" = gen2 ]; then
  TEACHER=${2:?gen2 needs the teacher file of gen1}
  cp "$TEACHER" $RUNS/teacher.npz
  KD="--teacher-probs $RUNS/teacher.npz"
  job g2_vgg_a $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 10 $KD --distill-weight 0.7 --distill-temp 1
  job g2_vgg_b $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 11 $KD --distill-weight 0.7 --distill-temp 2
  job g2_vgg_c $((T + 40)) --arch vgg --epochs 150 --time-limit $T --seed 12 $KD --distill-weight 0.5 --distill-temp 1
  job g2_fastnet $((T + 40)) --arch fastnet --epochs 300 --time-limit $T --seed 13 $KD --distill-temp 2
  job g2_mobile $((T + 40)) --arch mobile --epochs 300 --time-limit $T --seed 14 $KD --distill-temp 2
  job g2_mobile_deep $((T + 40)) --arch mobile_deep --epochs 300 --time-limit $T --seed 15 $KD --distill-temp 2
  wait_report
elif [ "$STAGE" = students ]; then
  teacher_in "${2:-}"
  job ${PREFIX}_vgg_a $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $SEED $KD --distill-weight 0.5 --distill-temp 1
  job ${PREFIX}_vgg_b $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $((SEED + 1)) $KD --distill-weight 0.5 --distill-temp 1
  job ${PREFIX}_vgg_c $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $((SEED + 2)) $KD --distill-weight 0.7 --distill-temp 1
  job ${PREFIX}_vgg_d $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $((SEED + 3)) $KD --distill-weight 0.5 --distill-temp 2
  job ${PREFIX}_vgg_mix $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $((SEED + 4)) $KD --distill-weight 0.5 --distill-temp 1 --mixup-alpha 0.5
  job ${PREFIX}_resnet $((T + 40)) --arch resnet18 --epochs 250 --time-limit $T --seed $((SEED + 5)) $KD --distill-weight 0.5 --distill-temp 1
  wait_report
  teacher_out "${PREFIX}_*"
elif [ "$STAGE" = small ]; then
  teacher_in "${2:-}"
  job ${PREFIX}_fastnet_a $((T + 40)) --arch fastnet --epochs 400 --time-limit $T --seed $SEED $KD --distill-weight 0.7 --distill-temp 2
  job ${PREFIX}_fastnet_b $((T + 40)) --arch fastnet --epochs 400 --time-limit $T --seed $((SEED + 1)) $KD --distill-weight 0.9 --distill-temp 2 --mixup-alpha 0
  job ${PREFIX}_fastnet_c $((T + 40)) --arch fastnet --epochs 400 --time-limit $T --seed $((SEED + 2)) $KD --distill-weight 0.7 --distill-temp 4 --label-smoothing 0
  job ${PREFIX}_mobile $((T + 40)) --arch mobile --epochs 400 --time-limit $T --seed $((SEED + 3)) $KD --distill-weight 0.7 --distill-temp 2
  job ${PREFIX}_mobile_deep $((T + 40)) --arch mobile_deep --epochs 400 --time-limit $T --seed $((SEED + 4)) $KD --distill-weight 0.7 --distill-temp 2
  job ${PREFIX}_fastnet_wide $((T + 40)) --arch fastnet_wide --epochs 400 --time-limit $T --seed $((SEED + 5)) $KD --distill-weight 0.7 --distill-temp 2
  wait_report
elif [ "$STAGE" = resnets ]; then
  teacher_in "${2:-}"
  big_trio resnet18
  wait_report
elif [ "$STAGE" = int8 ]; then
  teacher_in "${2:-}"
  big_trio "${BIG:-resnet18}"
  job ${PREFIX}_wide_a $((T + 40)) --arch fastnet_wide --epochs 400 --time-limit $T --seed $((SEED + 3)) $KD --distill-weight 0.7 --distill-temp 2
  job ${PREFIX}_wide_b $((T + 40)) --arch fastnet_wide --epochs 400 --time-limit $T --seed $((SEED + 4)) $KD --distill-weight 0.9 --distill-temp 2 --mixup-alpha 0
  job ${PREFIX}_wide_c $((T + 40)) --arch fastnet_wide --epochs 400 --time-limit $T --seed $((SEED + 5)) $KD --distill-weight 0.7 --distill-temp 1
  wait_report
elif [ "$STAGE" = archs ]; then
  teacher_in "${2:-}"
  [ -n "${ARCHS:-}${SMALL:-}" ] || { echo 'archs needs ARCHS and/or SMALL, e.g. ARCHS="vgg_deep resnet18 vgg"' >&2; exit 2; }
  i=0 big=()
  for arch in ${ARCHS:-}; do
    big+=(${PREFIX}_${arch%18}_$i)
    job ${PREFIX}_${arch%18}_$i $((T + 40)) --arch $arch --epochs 250 --time-limit $T --seed $((SEED + i)) $KD --distill-weight 0.5 --distill-temp 1
    i=$((i + 1))
  done
  for arch in ${SMALL:-}; do
    job ${PREFIX}_${arch#fastnet_}_$i $((T + 40)) --arch $arch --epochs 400 --time-limit $T --seed $((SEED + i)) $KD --distill-weight 0.9 --distill-temp 2 --mixup-alpha 0
    i=$((i + 1))
  done
  wait_report
  [ ${#big[@]} -gt 0 ] && teacher_out "${big[@]}"
elif [ "$STAGE" = mixed ]; then
  teacher_in "${2:-}"
  job ${PREFIX}_vgg_a $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $SEED $KD --distill-weight 0.5 --distill-temp 1
  job ${PREFIX}_vgg_b $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $((SEED + 1)) $KD --distill-weight 0.5 --distill-temp 1
  job ${PREFIX}_vgg_c $((T + 40)) --arch vgg --epochs 250 --time-limit $T --seed $((SEED + 2)) $KD --distill-weight 0.7 --distill-temp 2
  job ${PREFIX}_resnet $((T + 40)) --arch resnet18 --epochs 250 --time-limit $T --seed $((SEED + 3)) $KD --distill-weight 0.5 --distill-temp 1
  job ${PREFIX}_mobile $((T + 40)) --arch mobile --epochs 500 --time-limit $T --seed $((SEED + 4)) $KD --distill-weight 0.7 --distill-temp 2
  job ${PREFIX}_mobile_deep $((T + 40)) --arch mobile_deep --epochs 500 --time-limit $T --seed $((SEED + 5)) $KD --distill-weight 0.7 --distill-temp 2
  wait_report
  teacher_out "${PREFIX}_[vr]*"
else
  echo "unknown stage $STAGE: gen1, gen2, students, small, mixed, resnets, int8 or archs" >&2
  exit 2
fi
rm -f $RUNS/teacher_in.npz
for d in $RUNS/*/; do echo "$GPU_CALL" > "$d/gpu_call.txt"; done
[ "${MPS:-0}" = 1 ] && stop_mps
pack_each
