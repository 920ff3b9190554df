package loader

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -no-global-types -type sweep_cfg -type redirect_cfg -type redirect_target -type pkt_count floor ../bpf/floor.c -- -I../bpf/third_party -O2 -g -mcpu=v3 -Wall -Werror
