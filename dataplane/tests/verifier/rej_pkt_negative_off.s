; a load before data
; expect: reject "invalid access to packet, off=-1"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 14
if r4 > r3 goto drop
r0 = *(u8 *)(r2 - 1)
exit
drop:
r0 = 1
exit
