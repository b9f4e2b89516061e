# GPU call 5: more ensemble members, trained longer (4 runs at once instead of 6-9): three FER2013
# VGG seeds and a second FER+ VGG seed.
source scripts/gpu/common.sh
T=${T:-400}
job vgg_s5 $((T + 60)) --arch vgg --epochs 150 --time-limit $T --seed 5
job vgg_s6 $((T + 60)) --arch vgg --epochs 150 --time-limit $T --seed 6
job vgg_s7 $((T + 60)) --arch vgg --epochs 150 --time-limit $T --seed 7
job fp_vgg_s1 $((T + 60)) --arch vgg --epochs 150 --time-limit $T --seed 1 --dataset ferplus --targets hard
wait_all
grep -h "^summary\|time limit" $RUNS/*.log
pack_each
