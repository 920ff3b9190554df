package loader

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -no-global-types -type decap_count -type decap_config -type decap_dst_key -type decap_stat decap ../bpf/decap.c -- -I../bpf/third_party -O2 -g -mcpu=v3 -Wall -Werror
