"""llama.cpp RPC without llama.cpp's aborts: probing `--rpc` workers, and `--rpc-server`, this executable
as a worker."""
