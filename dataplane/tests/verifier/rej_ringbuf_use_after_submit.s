; writing a reservation after submitting it
; expect: reject "invalid mem access 'scalar'"
; maps: ringbuf 0 0 4096
r1 = map[0] ll
r2 = 16
r3 = 0
call 131
if r0 == 0 goto out
r6 = r0
r1 = r0
r2 = 0
call 132
*(u64 *)(r6 + 0) = 1
out:
r0 = 2
exit
