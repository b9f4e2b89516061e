# GPU call 2: every FER2013 and FER+ model, then the small students distilled from them.
# Phase 1 (teachers and ablations) runs 9 jobs at once on one GPU; each fits its epochs into the
# time limit; phase 2 distils fastnet students from phase 1's checkpoints.
source scripts/gpu/common.sh
T1=${T1:-300}; T2=${T2:-130}
job vgg_s0 $((T1 + 40)) --arch vgg --epochs 100 --time-limit $T1
job vgg_s1 $((T1 + 40)) --arch vgg --epochs 100 --time-limit $T1 --seed 1
job resnet_s0 $((T1 + 40)) --arch resnet18 --epochs 100 --time-limit $T1
job vgg_bal $((T1 + 40)) --arch vgg --epochs 100 --time-limit $T1 --seed 2 --balance loss
job vgg_soft $((T1 + 40)) --arch vgg --epochs 100 --time-limit $T1 --seed 3 --targets soft
job vgg_pre $((T1 + 40)) --arch vgg --epochs 100 --time-limit $T1 --seed 4 --preprocess report
job fp_soft $((T1 + 40)) --arch vgg --epochs 100 --time-limit $T1 --dataset ferplus --targets soft
job fp_hard $((T1 + 40)) --arch vgg --epochs 100 --time-limit $T1 --dataset ferplus --targets hard
job fp_res_soft $((T1 + 40)) --arch resnet18 --epochs 100 --time-limit $T1 --dataset ferplus --targets soft
wait_all
grep -h "^summary\|time limit" $RUNS/*.log
pack phase1

K=$RUNS
job fast_kd $((T2 + 30)) --arch fastnet --epochs 100 --time-limit $T2 --distill $K/vgg_s0/best.pt $K/vgg_s1/best.pt $K/resnet_s0/best.pt
job fast_plain $((T2 + 30)) --arch fastnet --epochs 100 --time-limit $T2
job fastwide_kd $((T2 + 30)) --arch fastnet_wide --epochs 100 --time-limit $T2 --distill $K/vgg_s0/best.pt $K/vgg_s1/best.pt $K/resnet_s0/best.pt
job fp_fast_kd $((T2 + 30)) --arch fastnet --epochs 100 --time-limit $T2 --dataset ferplus --targets soft --distill $K/fp_soft/best.pt $K/fp_res_soft/best.pt
wait_all
grep -h "^summary\|time limit" $RUNS/fast*.log $RUNS/fp_fast*.log
rm -rf $RUNS/{vgg,resnet,fp_soft,fp_hard,fp_res}*
pack phase2
