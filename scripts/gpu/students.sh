# GPU call 4: the CPU models, distilled for longer from the best FER2013 teacher of call 3 (vgg_s0,
# chosen on PublicTest), plus a single-GPU torchrun (DDP code path) run. The carried folder .gpu3
# holds Training + PublicTest and the teacher's float16 weights (PrivateTest is scored on the CPU).
export FERKIT_DATA=$PWD/.gpu3 SPLITS="Training PublicTest"
source scripts/gpu/common.sh
T=${T:-400}
job fast_kd2 $((T + 60)) --arch fastnet --epochs 300 --time-limit $T --report-splits PublicTest --distill .gpu3/vgg_s0.pt
job mobile_kd $((T + 60)) --arch mobile --epochs 300 --time-limit $T --report-splits PublicTest --distill .gpu3/vgg_s0.pt
timeout 120 torchrun --standalone --nproc_per_node=1 -m ferkit.train --arch fastnet --epochs 2 --subset 4096 \
  --report-splits PublicTest --out $RUNS/ddp1 > $RUNS/ddp1.log 2>&1; echo "torchrun exit $?" >> $RUNS/ddp1.log
wait_all
tail -n 4 $RUNS/*.log
grep -h "^summary\|time limit" $RUNS/*.log
pack_each
