; a store above the frame pointer
; expect: reject "outside the 512-byte frame"
*(u8 *)(r10 + 0) = 1
r0 = 2
exit
