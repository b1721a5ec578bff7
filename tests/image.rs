//! `sana::image`: resolution bins, resize-and-crop, 8-bit conversion and PNG output. Expected values are worked out by
//! hand from the tables and formulas in docs/numerics/sampling.md §3 and §11.

mod common;

use std::fs::File;
use std::io::BufReader;

use common::scratch;
use sana::image::{
    aspect_bins, resize_and_crop, resize_bilinear, resized_size, resolution_bin, to_rgb8,
    write_png, Image,
};
use sana::HostTensor;

fn nchw(shape: [usize; 4], data: Vec<f32>) -> HostTensor {
    HostTensor::new(shape.to_vec(), data).expect("test tensor")
}

#[test]
fn bins_table_sizes() {
    let sizes: Vec<usize> = [16, 32, 64, 128]
        .iter()
        .map(|&s| aspect_bins(s).unwrap().len())
        .collect();
    assert_eq!(sizes, [33, 33, 40, 40]);
}

#[test]
fn bins_512() {
    assert_eq!(resolution_bin(16, 512, 512).unwrap(), (512, 512));
    assert_eq!(resolution_bin(16, 1000, 600).unwrap(), (640, 384)); // 1.667 → 1.67
    assert_eq!(resolution_bin(16, 600, 1000).unwrap(), (384, 640)); // 0.6
                                                                    // 3.5 is exactly between 3.0 and 4.0, 2.75 between 2.5 and 3.0: ties go to the first key.
    assert_eq!(resolution_bin(16, 7, 2).unwrap(), (864, 288));
    assert_eq!(resolution_bin(16, 11, 4).unwrap(), (800, 320));
}

#[test]
fn bins_1024() {
    assert_eq!(resolution_bin(32, 1024, 1024).unwrap(), (1024, 1024));
    assert_eq!(resolution_bin(32, 512, 2048).unwrap(), (512, 2048));
    assert_eq!(resolution_bin(32, 1000, 600).unwrap(), (1280, 768)); // 1.667 → 1.67
    assert_eq!(resolution_bin(32, 768, 1360).unwrap(), (768, 1344)); // 0.565 → 0.57
    assert_eq!(resolution_bin(32, 1920, 1080).unwrap(), (1344, 768)); // 1.778 → 1.75
    assert_eq!(resolution_bin(32, 4000, 1000).unwrap(), (2048, 512)); // 4.0
    assert_eq!(resolution_bin(32, 100, 10000).unwrap(), (512, 2048)); // 0.01 → 0.25 (below the table)
    assert_eq!(resolution_bin(32, 10000, 100).unwrap(), (2048, 512)); // 100 → 4.0 (above the table)
    assert_eq!(resolution_bin(32, 7, 2).unwrap(), (1728, 576)); // tie 3.0 / 4.0 → 3.0
    assert_eq!(resolution_bin(32, 11, 4).unwrap(), (1600, 640)); // tie 2.5 / 3.0 → 2.5
}

#[test]
fn bins_2048() {
    assert_eq!(resolution_bin(64, 2048, 2048).unwrap(), (2048, 2048));
    assert_eq!(resolution_bin(64, 1000, 600).unwrap(), (2560, 1536));
    assert_eq!(resolution_bin(64, 600, 1000).unwrap(), (1536, 2560));
    assert_eq!(resolution_bin(64, 7, 2).unwrap(), (3712, 1024)); // 3.5 → 3.62 (this table has keys above 3)
    assert_eq!(resolution_bin(64, 1040, 400).unwrap(), (3200, 1280)); // 2.6 → 2.5 (0.1) over 2.89 (0.29)
}

#[test]
fn bins_4096() {
    assert_eq!(resolution_bin(128, 4096, 4096).unwrap(), (4096, 4096));
    assert_eq!(resolution_bin(128, 1000, 600).unwrap(), (5120, 3072));
    assert_eq!(resolution_bin(128, 1080, 1920).unwrap(), (3072, 5376)); // 0.5625 → 0.57
    assert_eq!(resolution_bin(128, 1, 4).unwrap(), (2048, 8192));
}

#[test]
fn bins_unknown_sample_size_is_an_error_naming_it() {
    let err = resolution_bin(48, 1024, 1024).unwrap_err().to_string();
    assert!(err.contains("48"), "{err}");
    assert!(resolution_bin(32, 0, 1024).is_err());
}

#[test]
fn resize_upsample_2x2_to_4x4() {
    // scale 0.5: sources −0.25→0, 0.25, 0.75, 1.25 → weights on the second pixel 0, 0.25, 0.75, 1 (the last clamps
    // its neighbour). With x = [[0, 1], [2, 3]] the result is 2·a_y + a_x.
    let img = nchw([1, 1, 2, 2], vec![0.0, 1.0, 2.0, 3.0]);
    let out = resize_and_crop(&img, 4, 4).unwrap();
    assert_eq!(out.shape(), [1, 1, 4, 4]);
    let a = [0.0, 0.25, 0.75, 1.0];
    let want: Vec<f32> = a
        .iter()
        .flat_map(|&y| a.iter().map(move |&x| 2.0 * y + x))
        .collect();
    assert_eq!(out.data(), want.as_slice());
}

#[test]
fn resize_downsample_4x4_to_2x2() {
    // scale 2: sources 0.5 and 2.5, so each output averages a 2×2 block of x = 4·row + col.
    let img = nchw([1, 1, 4, 4], (0..16).map(|v| v as f32).collect());
    let out = resize_and_crop(&img, 2, 2).unwrap();
    assert_eq!(out.data(), [2.5, 4.5, 10.5, 12.5]);
}

#[test]
fn resize_non_dyadic_scale_and_unchanged_axis() {
    // Width 3 → 2: scale 1.5, sources 0.25 and 1.75. Height 1 → 1 copies.
    let img = nchw([1, 1, 1, 3], vec![0.0, 4.0, 8.0]);
    let out = resize_bilinear(&img, 1, 2).unwrap();
    assert_eq!(out.data(), [1.0, 7.0]);
}

#[test]
fn resize_and_crop_non_square() {
    // 2×4 → 4×4: ratio max(2, 1) = 2, resize to 4×8, crop columns 2..6.
    // Rows (scale 0.5): weights 0, .25, .75, 1 → row values 0, 2.5, 7.5, 10 for x = 10·row + col.
    // Columns (scale 0.5): sources clamp(0.5·j − 0.25) → 0, .25, .75, 1.25, 1.75, 2.25, 2.75, 3 (last clamps).
    let img = nchw(
        [1, 1, 2, 4],
        vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0],
    );
    let out = resize_and_crop(&img, 4, 4).unwrap();
    assert_eq!(out.shape(), [1, 1, 4, 4]);
    let rows = [0.0, 2.5, 7.5, 10.0];
    let cols = [0.75, 1.25, 1.75, 2.25];
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|&r| cols.iter().map(move |&c| r + c))
        .collect();
    assert_eq!(out.data(), want.as_slice());
}

#[test]
fn resize_and_crop_keeps_batch_and_channels_apart() {
    let mut data = Vec::new();
    for plane in 0..6 {
        data.extend(std::iter::repeat_n(plane as f32, 9));
    }
    let img = nchw([2, 3, 3, 3], data);
    let out = resize_and_crop(&img, 2, 2).unwrap();
    assert_eq!(out.shape(), [2, 3, 2, 2]);
    for (plane, chunk) in out.data().chunks(4).enumerate() {
        assert!(chunk.iter().all(|&v| v == plane as f32));
    }
}

#[test]
fn resize_and_crop_same_size_is_identity() {
    let img = nchw([1, 3, 2, 3], (0..18).map(|v| v as f32 * 0.1).collect());
    assert_eq!(resize_and_crop(&img, 2, 3).unwrap(), img);
}

#[test]
fn resized_size_truncation() {
    // 1000×600 from the 1280×768 bin: ratio 0.78125 on both axes, exact.
    assert_eq!(resized_size(1280, 768, 1000, 600), (1000, 600));
    // 192×416 from 704×1472: ratio 416/1472; 704·r = 198.9… → 198, and 1472·r = 415.99… → 415, which would leave
    // diffusers cropping a 1-pixel strip; we resize to 416.
    assert_eq!(resized_size(704, 1472, 192, 416), (198, 416));
    assert_eq!(resized_size(224, 224, 61, 1), (61, 60));
}

#[test]
fn resize_and_crop_truncated_axis_still_has_requested_size() {
    let img = nchw([1, 3, 224, 224], vec![0.25; 3 * 224 * 224]);
    let out = resize_and_crop(&img, 61, 1).unwrap();
    assert_eq!(out.shape(), [1, 3, 61, 1]);
    assert!(out.data().iter().all(|&v| v == 0.25));
}

#[test]
fn resize_rejects_bad_shapes() {
    let flat = HostTensor::new(vec![4], vec![0.0; 4]).unwrap();
    assert!(resize_and_crop(&flat, 2, 2).is_err());
    assert!(resize_and_crop(&nchw([1, 1, 2, 2], vec![0.0; 4]), 0, 2).is_err());
}

#[test]
fn rgb8_levels_round_half_to_even() {
    // Tie values: 0 → 127.5 → 128; these two give exactly 64.5 → 64 and 65.5 → 66 in f32 (half away would give 65, 66).
    let tie_64 = f32::from_bits(0xbefc_fcfb);
    let tie_65 = f32::from_bits(0xbef8_f8f7);
    let values = [
        0.0,
        -1.0,
        1.0,
        2.0,
        -2.0,
        f32::NAN,
        tie_64,
        tie_65,
        f32::INFINITY,
    ];
    let want = [128u8, 0, 255, 255, 0, 0, 64, 66, 255];
    let n = values.len();
    // Put each value in all three channels of one pixel.
    let data: Vec<f32> = (0..3).flat_map(|_| values).collect();
    let img = nchw([1, 3, 1, n], data);
    let out = to_rgb8(&img).unwrap();
    assert_eq!(out.len(), 1);
    let px = out[0].pixels();
    for (i, &w) in want.iter().enumerate() {
        assert_eq!(&px[3 * i..3 * i + 3], [w, w, w], "value {}", values[i]);
    }
}

#[test]
fn rgb8_is_hwc_per_batch_element() {
    // Batch 2, 1×2 pixels; channel c of pixel x in image b is level 10·b + 3·x + c mapped through (v/127.5 − 1).
    let level = |v: u8| v as f32 / 127.5 - 1.0;
    let mut data = Vec::new();
    for b in 0..2u8 {
        for c in 0..3u8 {
            for x in 0..2u8 {
                data.push(level(10 * b + 3 * x + c));
            }
        }
    }
    let out = to_rgb8(&nchw([2, 3, 1, 2], data)).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!((out[1].width(), out[1].height()), (2, 1));
    assert_eq!(out[0].pixels(), [0, 1, 2, 3, 4, 5]);
    assert_eq!(out[1].pixels(), [10, 11, 12, 13, 14, 15]);
}

#[test]
fn rgb8_needs_three_channels() {
    assert!(to_rgb8(&nchw([1, 4, 1, 1], vec![0.0; 4])).is_err());
    assert!(Image::new(2, 2, vec![0; 11]).is_err());
    assert!(Image::new(0, 2, vec![]).is_err());
}

fn read_png(path: &std::path::Path) -> (png::OutputInfo, Vec<u8>) {
    let mut reader = png::Decoder::new(BufReader::new(File::open(path).unwrap()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info, buf)
}

#[test]
fn png_round_trip() {
    let dir = scratch("roundtrip");
    let path = dir.join("out.png");
    let pixels: Vec<u8> = (0..3 * 5 * 3).map(|v| (v * 7 % 256) as u8).collect();
    let image = Image::new(5, 3, pixels.clone()).unwrap();
    write_png(&path, &image).unwrap();
    // A second write replaces the first.
    let image2 = Image::new(5, 3, pixels.iter().map(|v| 255 - v).collect()).unwrap();
    write_png(&path, &image2).unwrap();

    let (info, bytes) = read_png(&path);
    assert_eq!((info.width, info.height), (5, 3));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    assert_eq!(bytes, image2.pixels());
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["out.png"]);
}

#[test]
fn png_unwritable_path_names_it() {
    let dir = scratch("unwritable");
    let path = dir.join("no-such-dir").join("out.png");
    let err = write_png(&path, &Image::new(1, 1, vec![1, 2, 3]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!path.exists());
}
