; the load is on the edge where the packet is short
; expect: reject "invalid access to packet"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r4 > r3 goto bad
r0 = 2
exit
bad:
r0 = *(u8 *)(r2 + 0)
exit
