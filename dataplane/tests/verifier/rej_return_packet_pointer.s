; returning a packet address
; expect: reject "R0 leaks addr as return value"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r0 = r2
exit
