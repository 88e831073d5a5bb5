//! `generate --attention-png DIR`: one decodable PNG per layer, of a sensible size, with real
//! content (the heat map's colours, not a blank image); a DIR that is a file is refused first.

use std::collections::HashSet;
use std::process::Command;

fn generate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cranegrad"))
        .env("CRANEGRAD_NO_DISK_CACHE", "1")
        .args(["generate", "-m", "small", "-p", "Hello there", "-n", "3"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn one_png_per_layer_with_the_heat_map_drawn() {
    let dir = std::env::temp_dir().join(format!("cranegrad-att-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = generate(&["--attention-png", dir.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for layer in 0..2 {
        let path = dir.join(format!("layer-{layer:02}.png"));
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        // 8 heads: a 3 x 3 grid of 300-pixel panels, the colour bar and the title.
        assert_eq!((info.width, info.height), (3 * 300 + 90, 3 * 300 + 40));
        let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
        let distinct: HashSet<&[u8]> = px.iter().copied().collect();
        assert!(distinct.len() > 50, "{} colours", distinct.len());
        // The darkest end of the scale (the first query attends only to itself: weight 1).
        let dark = px
            .iter()
            .filter(|p| p[0] < 40 && p[1] < 60 && p[2] < 100)
            .count();
        assert!(dark > 500, "{dark} dark pixels");
    }
    assert!(!dir.join("layer-02.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_folder_that_is_a_file_is_refused_before_any_work() {
    let f = std::env::temp_dir().join(format!("cranegrad-att-file-{}", std::process::id()));
    std::fs::write(&f, b"").unwrap();
    let o = generate(&["--attention-png", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a folder"));
    assert!(o.stdout.is_empty(), "nothing generated");
    let _ = std::fs::remove_file(&f);
}
