; a reservation size that is not constant
; expect: reject "expected a constant size"
r2 = *(u32 *)(r1 + 0)          ; data
r3 = *(u32 *)(r1 + 4)          ; data_end
; maps: ringbuf 0 0 4096
r4 = r2
r4 += 1
if r4 > r3 goto out
r2 = *(u8 *)(r2 + 0)
r1 = map[0] ll
r3 = 0
call 131
out:
r0 = 2
exit
