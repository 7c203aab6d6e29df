; a pointer spilled at an unaligned offset
; expect: reject "invalid spill"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
*(u64 *)(r10 - 12) = r2
r0 = 2
exit
