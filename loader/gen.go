package loader

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target bpfel -no-global-types -type addr_key -type vip_key -type vip_info -type vip_server -type member_vs_key -type member_vs_info -type vs_info -type pool_info -type member_info -type member_addr_key -type flow_key -type flow_info -type persist_key -type persist_entry -type settings -type vs_stats -type member_stats -type table_stats -type gc_item -type gc_batch -type persist_event -type redirect_err_key -type reason limpet ../bpf/limpet.c -- -I../bpf/include -O2 -g -mcpu=v3 -Wall -Werror
