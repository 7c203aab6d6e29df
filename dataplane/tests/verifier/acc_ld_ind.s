; LD_IND with a bounded index
; expect: accept
r0 = *(u8 *)skb[14]
r7 = r0
r7 &= 15
r7 <<= 2
r0 = *(u16 *)skb[r7 + 14]
r0 = 2
exit
