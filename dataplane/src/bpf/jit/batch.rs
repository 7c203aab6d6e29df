//! The batch entry: one native function that runs the program over an array of packets.
//!
//! Workers hand over packets a batch at a time, so the per-packet price of a native call
//! (argument set-up, call/return, the frame, turning the status into a `Result`) is paid once
//! per batch instead: the program's main function is inlined into a loop whose exits jump to
//! the code that stores the verdict and moves to the next packet. Callees stay separate
//! functions, exactly as in the single-packet entry, so both entries share every semantic.

use std::marker::PhantomData;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, BlockArg, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::FunctionBuilder;

use super::lower::{region_flags, Env, Lower, Region};
use super::JitError;

const I64: types::Type = types::I64;

/// `(packets, count, verdicts, ifindex | rx_queue << 32) -> faulted runs`.
pub(super) type BatchFn = unsafe extern "C" fn(*mut PacketRef<'_>, u64, *mut u64, u64) -> u64;

/// One packet of a batch: its bytes, borrowed mutably for as long as the descriptor lives, in
/// the layout the native loop reads (pointer, then length).
#[repr(C)]
#[derive(Debug)]
pub struct PacketRef<'a> {
    pub(super) data: *mut u8,
    pub(super) len: u64,
    _borrow: PhantomData<&'a mut [u8]>,
}

/// Bytes of one `PacketRef`, as the native loop strides over them.
const REF_SIZE: i64 = 16;
const _: () = assert!(std::mem::size_of::<PacketRef<'static>>() == REF_SIZE as usize);

impl<'a> PacketRef<'a> {
    pub fn new(packet: &'a mut [u8]) -> Self {
        PacketRef { data: packet.as_mut_ptr(), len: packet.len() as u64, _borrow: PhantomData }
    }

    /// The address and length it describes now (a fused pipeline whose stage moved the
    /// packet's head or tail narrows it to the moved packet).
    pub fn raw(&self) -> (usize, usize) {
        (self.data as usize, self.len as usize)
    }
}

pub(super) fn signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64); 4]);
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// Builds the loop and finalizes the builder.
pub(super) fn build(mut builder: FunctionBuilder<'_>, env: &Env<'_>) -> Result<(), JitError> {
    let b = &mut builder;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    // Rotated loop: the test for the next packet sits at the bottom, so the common path takes
    // one branch back per packet.
    let body = b.create_block();
    // Walks a descriptor pointer and a verdict pointer rather than an index: no scaling.
    let [desc, out, faults] = [(); 3].map(|()| b.append_block_param(body, I64));
    let cont = b.create_block();
    let (verdict, faulted) = (b.append_block_param(cont, I64), b.append_block_param(cont, I64));
    let done = b.create_block();
    let total = b.append_block_param(done, I64);

    b.switch_to_block(entry);
    let [packets, count, verdicts, ifq] = b.block_params(entry) else {
        unreachable!("batch signature has four parameters")
    };
    let (packets, count, verdicts, ifq) = (*packets, *count, *verdicts, *ifq);
    let zero = b.ins().iconst(I64, 0);
    let bytes = b.ins().imul_imm_s(count, REF_SIZE);
    let end = b.ins().iadd(packets, bytes);
    let empty = b.ins().icmp_imm_s(IntCC::Equal, count, 0);
    let start = [packets, verdicts, zero].map(BlockArg::Value);
    b.ins().brif(empty, done, &[BlockArg::Value(zero)], body, &start);

    b.switch_to_block(body);
    let data = b.ins().load(I64, MemFlagsData::trusted(), desc, 0);
    let len = b.ins().load(I64, MemFlagsData::trusted(), desc, 8);
    let r1 = if env.layout.uses_ctx {
        // r1 itself is observed (passed to a helper, say): give it a real `XdpContext`.
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, CTX_SIZE, 3));
        let ctx = b.ins().stack_addr(I64, slot, 0);
        let end = b.ins().iadd(data, len);
        let flags = region_flags(b, Region::Context).with_aligned();
        b.ins().store(flags, data, ctx, 0);
        b.ins().store(flags, end, ctx, 8);
        b.ins().store(flags, data, ctx, 16);
        // ingress_ifindex and rx_queue_index are adjacent u32s: one little-endian store.
        b.ins().store(flags, ifq, ctx, 24);
        let none = b.ins().iconst(I64, 0);
        b.ins().store(flags, none, ctx, 32);
        ctx
    } else {
        zero
    };
    Lower::inline(b, env, [r1, zero, data, len, ifq], cont).run()?;

    b.switch_to_block(cont);
    let flags = region_flags(b, Region::Counters).with_aligned();
    b.ins().store(flags, verdict, out, 0);
    let faults = b.ins().iadd(faults, faulted);
    let next = b.ins().iadd_imm_s(desc, REF_SIZE);
    let out = b.ins().iadd_imm_s(out, 8);
    let finished = b.ins().icmp(IntCC::Equal, next, end);
    let again = [next, out, faults].map(BlockArg::Value);
    b.ins().brif(finished, done, &[BlockArg::Value(faults)], body, &again);

    b.switch_to_block(done);
    b.ins().return_(&[total]);
    b.seal_all_blocks();
    builder.finalize(env.frontend);
    Ok(())
}

/// Bytes of `XdpContext`, which the loop builds in its frame for programs that need one.
const CTX_SIZE: u32 = std::mem::size_of::<crate::bpf::XdpContext>() as u32;
const _: () = assert!(CTX_SIZE == 40);
