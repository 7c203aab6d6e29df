; LD_IND indexed by a pointer
; expect: reject "packet offset is a pkt pointer"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r0 = *(u8 *)skb[r2]
r0 = 2
exit
