; the check covers 14 bytes, the load reaches 16
; expect: reject "invalid access to packet, off=12 size=4"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r4 > r3 goto drop
r0 = *(u32 *)(r2 + 12)
exit
drop:
r0 = 1
exit
