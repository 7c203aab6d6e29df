; variable header length: the IPv4 IHL scales an offset, then a second check covers the L4 header
; expect: accept
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
r4 = r2
r4 += 34
if r4 > r3 goto drop
r5 = *(u8 *)(r2 + 14)
r5 &= 15
r5 <<= 2
r6 = r2
r6 += 14
r6 += r5
r7 = r6
r7 += 4
if r7 > r3 goto drop
r0 = *(u16 *)(r6 + 2)
r0 &= 3
exit
drop:
r0 = 1
exit
