; a load below the 512-byte frame
; expect: reject "outside the 512-byte frame"
r0 = *(u64 *)(r10 - 520)
exit
