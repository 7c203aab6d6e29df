; a reservation neither submitted nor discarded
; expect: reject "unreleased reference"
; maps: ringbuf 0 0 4096
r1 = map[0] ll
r2 = 16
r3 = 0
call 131
if r0 == 0 goto out
*(u64 *)(r0 + 0) = 1
out:
r0 = 2
exit
