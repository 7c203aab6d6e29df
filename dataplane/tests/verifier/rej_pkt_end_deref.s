; a load through data_end
; expect: reject "invalid mem access 'pkt_end'"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r0 = *(u8 *)(r3 + 0)
exit
