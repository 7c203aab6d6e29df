//! The `sluice` command line without privileges: `filter compile` on every front end, and bad
//! input answered with exit status 2 and a reason.

use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("run sluice")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn filter_compile_reports_classic_ebpf_and_jit() {
    let out = sluice(&["filter", "compile", "udp dst port 53", "--dump"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("(tcpdump expression)"), "{stdout}");
    assert!(stdout.contains("classic: 16 instructions, valid"), "{stdout}");
    assert!(stdout.contains("ldh      [12]"), "{stdout}");
    assert!(stdout.contains("r0 = *(u16 *)skb[12]"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("jit: ") && l.contains("bytes of")), "{stdout}");
    assert!(out.stderr.is_empty(), "nothing logged: {}", text(&out.stderr));
}

#[test]
fn filter_compile_reads_files_in_every_format() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("f.ddd", b"2\n6 0 0 1\n6 0 0 0\n", "(classic BPF)"),
        ("f.hex", b"b7 00 00 00 02 00 00 00\n95 00 00 00 00 00 00 00\n", "(eBPF bytecode (hex))"),
        ("f.s", b"r0 = 2\nexit\n", "(eBPF assembler)"),
        ("f.bin", &[0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0], "(eBPF bytecode)"),
    ];
    for (name, body, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let out = sluice(&["filter", "compile", path.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(want), "{name}: {}", text(&out.stdout));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_filters_exit_2_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let back_edge = dir.join("loop.s");
    std::fs::write(&back_edge, "r0 = 0\nloop:\nr0 += 1\nif r0 < 10 goto loop\nexit\n").unwrap();
    let bad_classic = dir.join("bad.ddd");
    std::fs::write(&bad_classic, "2\n6 0 0 1\n21 5 0 7\n").unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["udp dst port"], "tcpdump expression: "),
        (vec![back_edge.to_str().unwrap()], "back-edge"),
        (vec![bad_classic.to_str().unwrap()], "classic BPF: "),
        (vec!["--format", "hex", back_edge.to_str().unwrap()], "eBPF bytecode: "),
    ];
    for (args, want) in cases {
        let mut full = vec!["filter", "compile"];
        full.extend(args.iter().copied());
        let out = sluice(&full);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_config_exits_2_naming_file_and_key() {
    let path = std::env::temp_dir().join(format!("sluice-cli-{}.toml", std::process::id()));
    std::fs::write(&path, "[[port]]\nname = 'a'\ninterface = 'x'\naction = 'explode'\n").unwrap();
    let out = sluice(&["run", "--config", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("port[0].action: unknown action `explode`"), "{stderr}");
    std::fs::remove_file(&path).unwrap();
}
