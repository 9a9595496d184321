"""`make vm-smoke`, split by job: `image` (the guest's disks), `bytecode` (the programs as BCC built
them), `qemu` (netns, tap and the guest's lifecycle) and `smoke` (the checks and the run, with the
overview); `common` holds what they share, and guest/ the files copied into the guest."""
