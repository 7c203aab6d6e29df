; a legacy packet load while a ring buffer reservation is open (it may end the run)
; expect: reject "unreleased reference"
; maps: ringbuf 0 0 4096
r1 = map[0] ll
r2 = 8
r3 = 0
call 131
if r0 == 0 goto out
r6 = r0
r0 = *(u8 *)skb[20]
r1 = r6
r2 = 0
call 132
out:
r0 = 2
exit
