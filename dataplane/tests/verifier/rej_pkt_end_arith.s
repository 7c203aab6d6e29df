; arithmetic on data_end
; expect: reject "pointer arithmetic on pkt_end prohibited"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r3 += 1
r0 = 2
exit
