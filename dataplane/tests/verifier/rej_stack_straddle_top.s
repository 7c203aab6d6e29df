; an 8-byte store straddling the top of the frame
; expect: reject "outside the 512-byte frame"
*(u64 *)(r10 - 4) = 1
r0 = 2
exit
