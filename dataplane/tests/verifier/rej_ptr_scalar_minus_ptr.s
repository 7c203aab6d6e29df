; a scalar minus a pointer
; expect: reject "with a pkt pointer operand prohibited"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = 100
r4 -= r2
r0 = 2
exit
