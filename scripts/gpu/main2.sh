# GPU call 3: fewer, longer runs. Phase 1: FER2013 teachers (3 VGG seeds + ResNet), the FER+ VGG and
# the raw-vs-report-preprocessing ablation, 6 at once; phase 2: the fastnet students distilled from them.
# Each run comes back as its own archive (<= 16 MiB: float16 weights, logits, logs).
source scripts/gpu/common.sh
T1=${T1:-300}; T2=${T2:-150}
job vgg_s0 $((T1 + 30)) --arch vgg --epochs 120 --time-limit $T1
job vgg_s1 $((T1 + 30)) --arch vgg --epochs 120 --time-limit $T1 --seed 1
job vgg_s2 $((T1 + 30)) --arch vgg --epochs 120 --time-limit $T1 --seed 2
job resnet_s0 $((T1 + 30)) --arch resnet18 --epochs 120 --time-limit $T1
job fp_vgg $((T1 + 30)) --arch vgg --epochs 120 --time-limit $T1 --dataset ferplus --targets hard
job vgg_pre $((T1 + 30)) --arch vgg --epochs 120 --time-limit $T1 --seed 4 --preprocess report
wait_all
grep -h "^summary\|time limit" $RUNS/*.log

K=$RUNS
job fast_kd $((T2 + 30)) --arch fastnet --epochs 100 --time-limit $T2 --distill $K/vgg_s0/best.pt $K/vgg_s1/best.pt $K/vgg_s2/best.pt $K/resnet_s0/best.pt
job fp_fast_kd $((T2 + 30)) --arch fastnet --epochs 100 --time-limit $T2 --dataset ferplus --targets hard --distill $K/fp_vgg/best.pt
wait_all
grep -h "^summary\|time limit" $RUNS/fast*.log $RUNS/fp_fast*.log
pack_each
