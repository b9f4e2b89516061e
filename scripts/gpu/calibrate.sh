# GPU call 1: the report's recipe in full, plus 3-epoch timing runs of every planned job, all at once.
source scripts/gpu/common.sh
job seed_cnn 500 --arch seed_cnn --recipe seed
job cal_vgg_a 300 --arch vgg --epochs 3
job cal_vgg_b 300 --arch vgg --epochs 3 --seed 1
job cal_vgg_c 300 --arch vgg --epochs 3 --balance loss
job cal_vgg_d 300 --arch vgg --epochs 3 --balance sampler
job cal_res 300 --arch resnet18 --epochs 3
job cal_fp 300 --arch vgg --epochs 3 --dataset ferplus --targets soft
job cal_soft 300 --arch vgg --epochs 3 --targets soft
job cal_compile 300 --arch vgg --epochs 3 --compile
job cal_fast 300 --arch fastnet --epochs 3
wait_all
grep -h "seconds=" $RUNS/*.log | tail -40
tail -n 3 $RUNS/*.log
pack calibrate
