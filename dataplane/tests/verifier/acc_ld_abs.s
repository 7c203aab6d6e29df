; legacy packet loads need no check (out of range ends the run)
; expect: accept
r0 = *(u16 *)skb[12]
if r0 != 0x800 goto out
r0 = *(u8 *)skb[23]
if r0 != 6 goto out
r0 = 1
exit
out:
r0 = 2
exit
