; returning a stack address
; expect: reject "R0 leaks addr as return value"
r0 = r10
exit
