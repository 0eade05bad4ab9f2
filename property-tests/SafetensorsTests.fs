/// Tests of the safetensors reader, writer and checkpoint loader (Lxt.Import).
module Lxt.Tests.SafetensorsTests

open System
open System.Buffers.Binary
open System.Collections.Generic
open System.IO
open System.Text
open Expecto
open FsCheck
open FsCheck.FSharp
open Lxt.Import

// ---------------------------------------------------------------------------------------------
// helpers

/// A fresh, unique temporary folder, deleted when disposed.
type TempDir() =
    let path = Path.Combine(Path.GetTempPath(), "lxt-safetensors-tests", Guid.NewGuid().ToString("N"))
    do Directory.CreateDirectory path |> ignore
    member _.Path = path
    member _.File(name: string) = Path.Combine(path, name)
    interface IDisposable with
        member _.Dispose() = try Directory.Delete(path, true) with _ -> ()

/// Runs f, expects an exception of type 'T (or a subtype) and returns it.
let throwsOf<'T when 'T :> exn> (f: unit -> unit) (message: string) : 'T =
    try
        f ()
        failtestf "%s: expected %s, nothing was raised" message typeof<'T>.Name
    with
    | :? 'T as e -> e
    | e when (e :? Expecto.AssertException) -> raise e
    | e -> failtestf "%s: expected %s, got %s: %s" message typeof<'T>.Name (e.GetType().Name) e.Message

/// Runs f and expects an exception of type 'T (or a subtype).
let throws<'T when 'T :> exn> (f: unit -> unit) (message: string) = throwsOf<'T> f message |> ignore

/// A safetensors image: 8-byte little-endian length of the UTF-8 header, header, data.
let image (header: string) (data: byte[]) =
    let h = Encoding.UTF8.GetBytes header
    let prefix = Array.zeroCreate<byte> 8
    BinaryPrimitives.WriteUInt64LittleEndian(prefix.AsSpan(), uint64 h.Length)
    Array.concat [ prefix; h; data ]

/// An image whose length prefix is <paramref name="n"/> whatever follows.
let imageWithLength (n: uint64) (rest: byte[]) =
    let prefix = Array.zeroCreate<byte> 8
    BinaryPrimitives.WriteUInt64LittleEndian(prefix.AsSpan(), n)
    Array.append prefix rest

let f32Bytes (xs: float32[]) =
    let b = Array.zeroCreate<byte> (4 * xs.Length)
    xs |> Array.iteri (fun i x -> BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(4 * i), x))
    b

let fixtureFolders () =
    if not (Directory.Exists Paths.fixtures) then
        failtestf "fixtures folder %s is missing (set LXT_FIXTURES or LXT_REPO_ROOT)" Paths.fixtures
    Directory.GetDirectories Paths.fixtures
    |> Array.filter (fun d -> File.Exists(Path.Combine(d, "model.safetensors")))
    |> Array.sort

let fixtureFile (model: string) = Path.Combine(Paths.fixtures, model, "model.safetensors")

/// Opens a good image, both in memory and as a real (memory-mapped) file, and reads every tensor.
let readAll (f: SafetensorsFile) =
    for t in f.TensorsInFileOrder do
        let bytes = f.GetBytes t.Name
        if int64 bytes.Length <> t.ByteLength then failtestf "GetBytes length of %s" t.Name
        let a = f.ReadFloat32 t.Name
        let d = f.ReadFloat64 t.Name
        if int64 a.Length <> t.ElementCount || int64 d.Length <> t.ElementCount then failtestf "element count of %s" t.Name
        if not (t.DType.IsFloatingPoint()) then f.ReadInt64 t.Name |> ignore

/// Asserts that opening <paramref name="bytes"/> raises SafetensorsFormatException, both from memory and
/// from a file; checks that the message names the file and, when given, the tensor.
let expectFormatError (bytes: byte[]) (tensor: string option) (mustMention: string option) =
    use dir = new TempDir()
    let path = dir.File "bad.safetensors"
    File.WriteAllBytes(path, bytes)
    let check (label: string) (expectedPath: string) (openIt: unit -> SafetensorsFile) =
        let ex =
            try
                use f = openIt ()
                failtestf "%s: expected SafetensorsFormatException, the file loaded with %d tensors" label f.Tensors.Count
            with :? SafetensorsFormatException as e -> e
        Expect.equal ex.FilePath expectedPath $"{label}: FilePath"
        Expect.stringContains ex.Message expectedPath $"{label}: message names the file"
        Expect.isSome (Option.ofNullable ex.Offset) $"{label}: offset is given"
        Expect.stringContains ex.Message "byte offset" $"{label}: message gives the offset"
        match tensor with
        | Some name ->
            Expect.equal ex.TensorName name $"{label}: TensorName"
            Expect.stringContains ex.Message $"'{name}'" $"{label}: message names the tensor"
        | None -> ()
        match mustMention with
        | Some word -> Expect.stringContains (ex.Message.ToLowerInvariant()) (word.ToLowerInvariant()) $"{label}: message explains"
        | None -> ()
        ex
    let e1 = check "file" (Path.GetFullPath path) (fun () -> SafetensorsFile.Open path)
    let e2 = check "memory" "bad-image" (fun () -> SafetensorsFile.OpenFromBytes(bytes, "bad-image"))
    Expect.equal e1.Problem e2.Problem "same problem reported from file and memory"
    Expect.equal e1.Offset e2.Offset "same offset reported from file and memory"

/// Outcome of loading arbitrary bytes: loads and every tensor reads, or a SafetensorsFormatException.
/// Any other exception escapes (and fails the calling property).
let loadOrFormatError (openIt: unit -> SafetensorsFile) : Result<int, string> =
    try
        use f = openIt ()
        readAll f
        Ok f.Tensors.Count
    with :? SafetensorsFormatException as e -> Error e.Problem

let t1 = """{"bad.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"""
let eightBytes = f32Bytes [| 1.0f; 2.0f |]

/// bfloat16 round-to-nearest-even, written independently of the library for the round-trip test.
let bf16Round (x: float32) =
    if Single.IsNaN x then x
    else
        let bits = BitConverter.SingleToUInt32Bits x
        let lsb = (bits >>> 16) &&& 1u
        BitConverter.UInt32BitsToSingle(((bits + 0x7FFFu + lsb) >>> 16) <<< 16)

// ---------------------------------------------------------------------------------------------
// generators for the robustness properties

let genByte = Gen.choose (0, 255) |> Gen.map byte

let genRandomBytes =
    Gen.sized (fun size -> Gen.choose (0, max 8 (size * 4)) |> Gen.bind (fun n -> Gen.arrayOfLength n genByte))

/// Valid small images used as mutation seeds.
let seedImages =
    [| image """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""" eightBytes
       image """{"__metadata__":{"format":"pt"},"x":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"y":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}""" (Array.init 16 byte)
       image """{"e":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]},"h":{"dtype":"F16","shape":[1],"data_offsets":[3,5]},"d":{"dtype":"F64","shape":[1],"data_offsets":[5,13]}}""" (Array.init 13 (fun i -> byte (i * 37)))
       image "{}" [||]
       image """{"i8":{"dtype":"I8","shape":[1,1,2],"data_offsets":[0,2]},"i16":{"dtype":"I16","shape":[1],"data_offsets":[2,4]},"i32":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}}   """ (Array.init 8 byte) |]

type Mutation =
    | Overwrite of pos: int * value: byte
    | Insert of pos: int * value: byte
    | Delete of pos: int
    | Truncate of len: int
    | SetLength of uint64

let applyMutation (bytes: byte[]) (m: Mutation) =
    let n = bytes.Length
    match m with
    | Overwrite (p, v) when n > 0 -> let c = Array.copy bytes in c.[p % n] <- v; c
    | Insert (p, v) -> Array.concat [ bytes.[.. (p % (n + 1)) - 1]; [| v |]; bytes.[p % (n + 1) ..] ]
    | Delete p when n > 0 -> let p = p % n in Array.append bytes.[.. p - 1] bytes.[p + 1 ..]
    | Truncate len -> bytes.[.. (min n (len % (n + 1))) - 1]
    | SetLength v when n >= 8 -> let c = Array.copy bytes in BinaryPrimitives.WriteUInt64LittleEndian(c.AsSpan(), v); c
    | _ -> bytes

let genMutation =
    Gen.frequency
        [ 5, Gen.map2 (fun p v -> Overwrite (p, v)) (Gen.choose (0, 400)) genByte
          2, Gen.map2 (fun p v -> Insert (p, v)) (Gen.choose (0, 400)) (Gen.elements (([ '{'; '}'; '['; ']'; '"'; ','; ':'; '-'; '0'; '9'; ' '; '\\' ] |> List.map byte) @ [ 0uy; 0xFFuy ]))
          2, Gen.choose (0, 400) |> Gen.map Delete
          1, Gen.choose (0, 400) |> Gen.map Truncate
          1, Gen.elements [ 0UL; 1UL; 2UL; 7UL; 60UL; 100_000_001UL; UInt64.MaxValue; 1UL <<< 63 ] |> Gen.map SetLength ]

let genMutated =
    gen {
        let! seed = Gen.elements seedImages
        let! k = Gen.choose (1, 6)
        let! ms = Gen.listOfLength k genMutation
        return List.fold applyMutation seed ms
    }

/// Headers built from JSON-ish fragments with a correct length prefix.
let genTokenSoup =
    let fragments =
        [ "{"; "}"; "["; "]"; ":"; ","; "\"a\""; "\"b\""; "\"dtype\""; "\"shape\""; "\"data_offsets\""; "\"__metadata__\""
          "\"F32\""; "\"BF16\""; "\"I64\""; "\"BOOL\""; "\"XYZ\""; "0"; "4"; "8"; "-1"; "1.5"; "1e3"; "9223372036854775807"
          "18446744073709551616"; "null"; "true"; "\"\\ud800\""; "\"\\u0061\""; " "; "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}" ]
    gen {
        let! k = Gen.choose (0, 30)
        let! parts = Gen.listOfLength k (Gen.elements fragments)
        let! dataLen = Gen.choose (0, 16)
        let! data = Gen.arrayOfLength dataLen genByte
        return image (String.Concat parts) data
    }

/// Structurally plausible headers: random entries with random (often almost right) dtype, shape and offsets.
let genStructured =
    let genEntry =
        gen {
            let! name = Gen.elements [ "a"; "b"; "c"; "a.b"; "é"; "" ]
            let! dtype = Gen.elements [ "F64"; "F32"; "F16"; "BF16"; "I64"; "I32"; "I16"; "I8"; "U8"; "BOOL"; "F8_E4M3"; "f32" ]
            let! rank = Gen.choose (0, 3)
            let! shape = Gen.listOfLength rank (Gen.frequency [ 9, Gen.choose (0, 3); 1, Gen.choose (-2, -1) ])
            let! b = Gen.choose (-1, 24)
            let! len = Gen.choose (0, 24)
            return sprintf "\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%d,%d]}" name dtype (String.Join(",", shape)) b (b + len)
        }
    gen {
        let! k = Gen.choose (0, 4)
        let! entries = Gen.listOfLength k genEntry
        let! dataLen = Gen.choose (0, 48)
        let! data = Gen.arrayOfLength dataLen genByte
        return image ("{" + String.Join(",", entries) + "}") data
    }

/// Valid images (tensors packed contiguously, sizes right), then possibly one small perturbation of a field.
let genValidish =
    let dtypes = [ "F64", 8; "F32", 4; "F16", 2; "BF16", 2; "I64", 8; "I32", 4; "I16", 2; "I8", 1; "U8", 1; "BOOL", 1 ]
    gen {
        let! k = Gen.choose (0, 5)
        let! specs = Gen.listOfLength k (Gen.map2 (fun d s -> d, s) (Gen.elements dtypes) (Gen.choose (0, 2) |> Gen.bind (fun r -> Gen.listOfLength r (Gen.choose (0, 4)))))
        let! perturb = Gen.frequency [ 3, Gen.constant None; 2, Gen.map2 (fun i d -> Some (i, d)) (Gen.choose (0, 4)) (Gen.choose (-3, 3)) ]
        let! dataNoise = Gen.choose (-2, 2)
        let mutable offset = 0
        let entries =
            specs |> List.mapi (fun i ((dtype, size), shape) ->
                let bytes = (List.fold (*) 1 shape) * size
                let b, e = offset, offset + bytes
                offset <- e
                let b, e =
                    match perturb with
                    | Some (j, d) when j = i -> (if d % 2 = 0 then b + d, e else b, e + d)
                    | _ -> b, e
                sprintf "\"t%d\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%d,%d]}" i dtype (String.Join(",", shape)) b e)
        let dataLen = max 0 (offset + (if perturb.IsSome then dataNoise else 0))
        let! data = Gen.arrayOfLength dataLen genByte
        return image ("{" + String.Join(",", entries) + "}") data
    }

let genAnyImage =
    Gen.frequency [ 2, genRandomBytes; 4, genMutated; 2, genTokenSoup; 2, genStructured; 4, genValidish ]

let robustnessConfig = { FsCheckConfig.defaultConfig with maxTest = 1000 }

let corpusFolder () = Path.Combine(Paths.repoRoot, "property-tests", "fuzz-corpus", "safetensors")

// ---------------------------------------------------------------------------------------------

let tests =
    testList "safetensors" [

        testList "fixtures" [
            test "every fixture opens with sane tensors" {
                let folders = fixtureFolders ()
                Expect.isGreaterThanOrEqual folders.Length 7 "seven reference checkpoints"
                for dir in folders do
                    use f = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors"))
                    Expect.isGreaterThan f.Tensors.Count 5 $"{dir}: tensor count"
                    Expect.equal f.TensorsInFileOrder.Count f.Tensors.Count "ordered list matches dictionary"
                    Expect.equal (f.HeaderLength % 8L) 0L "header padded to 8"
                    for t in f.TensorsInFileOrder do
                        Expect.isTrue (t.Shape.Count >= 1 && t.Shape.Count <= 4) $"{t.Name}: rank"
                        Expect.all t.Shape (fun d -> d > 0L && d < 100_000L) $"{t.Name}: dims"
                        Expect.equal t.ByteLength (t.ElementCount * int64 (t.DType.ElementSize())) $"{t.Name}: byte size"
                        let v = f.ReadFloat32 t.Name
                        Expect.all v Single.IsFinite $"{t.Name}: finite values"
                        let d = f.ReadFloat64 t.Name
                        Expect.equal (Array.map float32 d) v $"{t.Name}: float64 and float32 readings agree"
            }

            test "every fixture folder opens as a checkpoint" {
                for dir in fixtureFolders () do
                    use c = SafetensorsCheckpoint.Open dir
                    Expect.isNull c.IndexPath "single file"
                    Expect.isGreaterThan c.Names.Count 5 "names"
                    for n in c.Names do
                        Expect.isTrue (c.Contains n) "Contains"
                        let ok, info = c.TryGetInfo n
                        Expect.isTrue ok "TryGetInfo"
                        Expect.equal (c.Shape n) info.Shape "Shape"
                        Expect.equal (c.DType n) info.DType "DType"
            }

            test "llama: known shapes and values" {
                use f = SafetensorsFile.Open(fixtureFile "llama")
                Expect.equal (List.ofSeq f.Tensors["lm_head.weight"].Shape) [ 97L; 32L ] "lm_head shape"
                Expect.equal (List.ofSeq f.Tensors["model.layers.0.self_attn.k_proj.weight"].Shape) [ 16L; 32L ] "k_proj (2 kv heads)"
                Expect.equal (List.ofSeq f.Tensors["model.layers.0.mlp.down_proj.weight"].Shape) [ 32L; 64L ] "down_proj"
                Expect.equal f.Metadata["format"] "pt" "metadata"
                let w = f.ReadFloat32 "lm_head.weight"
                Expect.equal w.[0..3] [| 0.08833107352256775f; -0.05893367901444435f; -0.07141817361116409f; 0.04211784526705742f |] "first values"
                let dst = Array.zeroCreate<float32> w.Length
                f.ReadFloat32("lm_head.weight", dst.AsSpan())
                Expect.equal dst w "span overload"
            }

            test "qwen2 bfloat16 converts exactly (bits << 16)" {
                use f = SafetensorsFile.Open(fixtureFile "qwen2")
                Expect.all f.TensorsInFileOrder (fun t -> t.DType = TensorDType.BF16) "all BF16"
                let w = f.ReadFloat32 "model.embed_tokens.weight"
                Expect.equal (w.Length) (97 * 32) "element count"
                Expect.equal w.[0..3] [| 0.058349609375f; -0.283203125f; 0.12255859375f; 0.15234375f |] "values decoded independently"
                Expect.all (f.ReadFloat32 "model.norm.weight") (fun x -> x = 1.0f) "RMSNorm weight is ones"
                for t in f.TensorsInFileOrder do
                    let raw = f.GetBytes(t.Name).ToArray()
                    let manual = Array.init (raw.Length / 2) (fun i -> BitConverter.UInt32BitsToSingle(uint32 (BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan<byte>(raw, 2 * i, 2))) <<< 16))
                    Expect.equal (f.ReadFloat32 t.Name) manual $"{t.Name}: bf16 -> f32"
                    Expect.equal (f.ReadFloat64 t.Name) (Array.map float manual) $"{t.Name}: bf16 -> f64"
            }

            test "unknown tensor name names tensor and file" {
                use f = SafetensorsFile.Open(fixtureFile "gpt2")
                let ex = throwsOf<TensorNotFoundException> (fun () -> f.ReadFloat32 "no.such.tensor" |> ignore) "unknown"
                Expect.stringContains ex.Message "no.such.tensor" "names tensor"
                Expect.stringContains ex.Message f.Path "names file"
                Expect.isTrue (box ex :? LxtImportException) "is an import exception"
                Expect.isFalse (f.Contains "no.such.tensor") "Contains"
            }

            test "use after Dispose raises ObjectDisposedException" {
                let f = SafetensorsFile.Open(fixtureFile "vit")
                let name = f.TensorsInFileOrder.[0].Name
                f.Dispose()
                f.Dispose()
                throws<ObjectDisposedException> (fun () -> f.ReadFloat32 name |> ignore) "ReadFloat32"
                throws<ObjectDisposedException> (fun () -> f.GetBytes(name).Length |> ignore) "GetBytes"
                throws<ObjectDisposedException> (fun () -> f.Tensors |> ignore) "Tensors"
                let c = SafetensorsCheckpoint.Open(Path.Combine(Paths.fixtures, "vit"))
                c.Dispose()
                throws<ObjectDisposedException> (fun () -> c.ReadFloat32 name |> ignore) "checkpoint"
            }

            test "ReadInt64 refuses floating point tensors" {
                use f = SafetensorsFile.Open(fixtureFile "bert")
                let name = f.TensorsInFileOrder.[0].Name
                throws<LxtImportException> (fun () -> f.ReadInt64 name |> ignore) "float tensor"
            }
        ]

        testList "writer" [
            test "F32 round trip is bit exact, metadata kept, header padded" {
                use dir = new TempDir()
                let path = dir.File "rt.safetensors"
                let rnd = Random(7)
                let a = Array.init 60 (fun _ -> float32 (rnd.NextDouble() * 2.0 - 1.0))
                let special = [| Single.NaN; Single.PositiveInfinity; Single.NegativeInfinity; -0.0f; Single.Epsilon; Single.MaxValue; 1e-40f |]
                let meta = readOnlyDict [ "format", "pt"; "note", "ünïcode \"quoted\"" ]
                SafetensorsWriter.Write(path, [ struct ("w.a", TensorDType.F32, [| 3L; 4L; 5L |], a)
                                                struct ("w.special", TensorDType.F32, [| 7L |], special)
                                                struct ("w.empty", TensorDType.F32, [| 0L; 3L |], [||])
                                                struct ("w.scalar", TensorDType.F32, [||], [| 42.0f |]) ], meta)
                use f = SafetensorsFile.Open path
                Expect.equal (f.HeaderLength % 8L) 0L "padded"
                Expect.equal (f.TensorsInFileOrder |> Seq.map (fun t -> t.Name) |> List.ofSeq) [ "w.a"; "w.special"; "w.empty"; "w.scalar" ] "order kept"
                Expect.equal (f.ReadFloat32 "w.a") a "values"
                Expect.equal (f.ReadFloat32 "w.special" |> Array.map BitConverter.SingleToUInt32Bits) (special |> Array.map BitConverter.SingleToUInt32Bits) "special values, bit exact"
                Expect.equal (f.ReadFloat32 "w.empty") [||] "empty"
                Expect.equal (f.ReadFloat32 "w.scalar") [| 42.0f |] "scalar"
                Expect.equal (List.ofSeq f.Tensors["w.a"].Shape) [ 3L; 4L; 5L ] "shape"
                Expect.equal f.Metadata["note"] "ünïcode \"quoted\"" "metadata"
                Expect.equal (Directory.GetFiles dir.Path).Length 1 "no temporary file left"
            }

            test "BF16, F16 and F64 round trip" {
                use dir = new TempDir()
                let path = dir.File "rt16.safetensors"
                let rnd = Random(11)
                let a = Array.init 500 (fun _ -> float32 ((rnd.NextDouble() - 0.5) * Math.Pow(10.0, rnd.NextDouble() * 8.0 - 4.0)))
                let ties = [| 1.0f + 1.0f / 256.0f; 1.0f + 3.0f / 256.0f; -(1.0f + 1.0f / 256.0f); Single.NaN; Single.PositiveInfinity; 3.4e38f |]
                SafetensorsWriter.Write(path, [ struct ("bf", TensorDType.BF16, [| 500L |], a)
                                                struct ("ties", TensorDType.BF16, [| 6L |], ties)
                                                struct ("h", TensorDType.F16, [| 500L |], a)
                                                struct ("d", TensorDType.F64, [| 500L |], a) ])
                use f = SafetensorsFile.Open path
                let bf = f.ReadFloat32 "bf"
                Expect.equal bf (Array.map bf16Round a) "BF16 = round-to-nearest-even of the input"
                for x, y in Array.zip a bf do
                    Expect.isLessThanOrEqual (abs (float x - float y)) (abs (float x) / 256.0) "within half a bf16 ulp"
                let t = f.ReadFloat32 "ties"
                Expect.equal t.[0] 1.0f "tie rounds down to even"
                Expect.equal t.[1] (1.0f + 1.0f / 64.0f) "tie rounds up to even"
                Expect.equal t.[2] -1.0f "negative tie"
                Expect.isTrue (Single.IsNaN t.[3]) "NaN stays NaN"
                Expect.equal t.[4] Single.PositiveInfinity "inf"
                Expect.equal t.[5] Single.PositiveInfinity "overflow rounds to inf"
                Expect.equal (f.ReadFloat32 "h") (a |> Array.map (fun x -> float32 (Half.op_Explicit x : Half))) "F16 via System.Half"
                Expect.equal (f.ReadFloat64 "d") (Array.map float a) "F64 exact"
                Expect.equal (f.ReadFloat32 "d") a "F64 back to F32 exact"
            }

            test "overwrite is atomic and bad input leaves the old file" {
                use dir = new TempDir()
                let path = dir.File "m.safetensors"
                SafetensorsWriter.Write(path, [ struct ("x", TensorDType.F32, [| 1L |], [| 1.0f |]) ])
                SafetensorsWriter.Write(path, [ struct ("x", TensorDType.F32, [| 2L |], [| 2.0f; 3.0f |]) ])
                do
                    use f = SafetensorsFile.Open path
                    Expect.equal (f.ReadFloat32 "x") [| 2.0f; 3.0f |] "overwritten"
                throws<ArgumentException> (fun () ->
                    SafetensorsWriter.Write(path, [ struct ("x", TensorDType.F32, [| 3L |], [| 1.0f |]) ])) "shape mismatch"
                throws<ArgumentException> (fun () ->
                    SafetensorsWriter.Write(path, [ struct ("x", TensorDType.F32, [| 1L |], [| 1.0f |]); struct ("x", TensorDType.F32, [| 1L |], [| 1.0f |]) ])) "duplicate"
                throws<ArgumentException> (fun () ->
                    SafetensorsWriter.Write(path, [ struct ("x", TensorDType.I32, [| 1L |], [| 1.0f |]) ])) "integer dtype"
                // A source that fails half way through: nothing is written.
                let failing = seq { yield struct ("y", TensorDType.F32, [| 1L |], [| 1.0f |]); failwith "source broke" }
                Expect.throws (fun () -> SafetensorsWriter.Write(path, failing)) "failing source"
                use f = SafetensorsFile.Open path
                Expect.equal (f.ReadFloat32 "x") [| 2.0f; 3.0f |] "old content intact"
                Expect.equal (Directory.GetFiles dir.Path) [| path |] "no temporary file left"
            }
        ]

        testList "malformed files" [
            test "empty file" { expectFormatError [||] None (Some "shorter than") }
            test "truncated prefix" { expectFormatError [| 1uy; 0uy; 0uy |] None (Some "shorter than") }
            test "truncated header (lying header length)" {
                let good = image t1 eightBytes
                expectFormatError good.[.. 30] None (Some "truncated")
            }
            test "header length larger than the file" { expectFormatError (imageWithLength 1000UL (Encoding.UTF8.GetBytes "{}")) None (Some "only") }
            test "header length absurdly large" {
                expectFormatError (imageWithLength (1UL <<< 40) (Encoding.UTF8.GetBytes "{}")) None (Some "limit")
                expectFormatError (imageWithLength UInt64.MaxValue [||]) None (Some "limit")
            }
            test "header length zero" { expectFormatError (imageWithLength 0UL [| 1uy |]) None None }
            test "not JSON" { expectFormatError (image """{"bad.weight": {"dtype": """ [||]) None (Some "JSON") }
            test "JSON but not an object" {
                expectFormatError (image "[1,2]" [||]) None (Some "object")
                expectFormatError (image "\"x\"" [||]) None (Some "object")
                expectFormatError (image "42" [||]) None (Some "object")
            }
            test "invalid UTF-8" { expectFormatError (Array.append (imageWithLength 4UL [| byte '{'; byte '"'; 0xC3uy; byte '"' |]) [||]) None (Some "UTF-8") }
            test "content after the object" { expectFormatError (image "{} {}" [||]) None None }
            test "entry not an object" { expectFormatError (image """{"bad.weight":5}""" [||]) (Some "bad.weight") (Some "object") }
            test "missing dtype / shape / data_offsets" {
                expectFormatError (image """{"bad.weight":{"shape":[2],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "dtype")
                expectFormatError (image """{"bad.weight":{"dtype":"F32","data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "shape")
                expectFormatError (image """{"bad.weight":{"dtype":"F32","shape":[2]}}""" eightBytes) (Some "bad.weight") (Some "data_offsets")
            }
            test "wrong JSON types" {
                for entry, word in
                    [ """{"dtype":5,"shape":[2],"data_offsets":[0,8]}""", "dtype"
                      """{"dtype":"F32","shape":"2","data_offsets":[0,8]}""", "shape"
                      """{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}""", "shape"
                      """{"dtype":"F32","shape":[null],"data_offsets":[0,8]}""", "shape"
                      """{"dtype":"F32","shape":[2],"data_offsets":"0,8"}""", "data_offsets"
                      """{"dtype":"F32","shape":[2],"data_offsets":[0]}""", "two"
                      """{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}""", "two"
                      """{"dtype":"F32","shape":[2],"data_offsets":[-1,8]}""", "non-negative"
                      """{"dtype":"F32","shape":[2],"data_offsets":[0,1e1]}""", "integer"
                      """{"dtype":"F32","shape":[2],"data_offsets":[8,0]}""", "greater"
                      """{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}""", "twice" ] do
                    expectFormatError (image ("{\"bad.weight\":" + entry + "}") eightBytes) (Some "bad.weight") (Some word)
            }
            test "negative dimension" { expectFormatError (image """{"bad.weight":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "negative") }
            test "unknown dtype" {
                expectFormatError (image """{"bad.weight":{"dtype":"XYZ","shape":[2],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "XYZ")
                expectFormatError (image """{"bad.weight":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "F8_E4M3")
                expectFormatError (image """{"bad.weight":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "unsupported")
            }
            test "offsets past the end" { expectFormatError (image """{"bad.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""" eightBytes) (Some "bad.weight") (Some "past the end") }
            test "size mismatch" { expectFormatError (image """{"bad.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "needs 12") }
            test "size overflow" {
                expectFormatError (image """{"bad.weight":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "overflow")
                expectFormatError (image """{"bad.weight":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "overflow")
            }
            test "dimension beyond int64" { expectFormatError (image """{"bad.weight":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}}""" eightBytes) (Some "bad.weight") (Some "integer") }
            test "overlapping tensors" {
                let h = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"bad.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"""
                expectFormatError (image h (Array.zeroCreate 12)) (Some "bad.weight") (Some "overlaps")
            }
            test "gap between tensors and trailing bytes" {
                let h = """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"bad.weight":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"""
                expectFormatError (image h (Array.zeroCreate 12)) (Some "bad.weight") (Some "gap")
                expectFormatError (image """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""" (Array.zeroCreate 12)) None (Some "trailing")
            }
            test "duplicate tensor names" {
                let h = """{"bad.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"bad.weight":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"""
                expectFormatError (image h eightBytes) (Some "bad.weight") (Some "two entries")
                // The same name spelled with a JSON escape is still a duplicate.
                let h2 = """{"ab":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0061b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"""
                expectFormatError (image h2 eightBytes) (Some "ab") None
            }
            test "bad __metadata__" {
                expectFormatError (image """{"__metadata__":[1]}""" [||]) None (Some "__metadata__")
                expectFormatError (image """{"__metadata__":{"a":1}}""" [||]) None (Some "string")
                expectFormatError (image """{"__metadata__":{"a":"x","a":"y"}}""" [||]) None (Some "twice")
                expectFormatError (image """{"__metadata__":{},"__metadata__":{}}""" [||]) None (Some "__metadata__")
            }
            test "lone surrogate escape" { expectFormatError (image """{"\ud800":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""" eightBytes) None None }
            test "deep nesting" { expectFormatError (image ("{\"bad.weight\":{\"extra\":" + String('[', 200) + String(']', 200) + "}}") [||]) (Some "bad.weight") (Some "depth") }
            test "missing file is an import error, not a crash" {
                use dir = new TempDir()
                let ex = throwsOf<LxtImportException> (fun () -> SafetensorsFile.Open(dir.File "none.safetensors") |> ignore) "missing"
                Expect.stringContains ex.Message "none.safetensors" "names the file"
            }
            test "tolerated: unknown keys, empty header, zero-size tensors, header padding" {
                let h = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":{"x":[1,2]}},"z":{"dtype":"U8","shape":[0,5],"data_offsets":[8,8]}}     """
                use f = SafetensorsFile.OpenFromBytes(image h eightBytes)
                Expect.equal (f.ReadFloat32 "a") [| 1.0f; 2.0f |] "values"
                Expect.equal (f.ReadFloat32 "z") [||] "zero-size"
                use e = SafetensorsFile.OpenFromBytes(image "{}" [||])
                Expect.equal e.Tensors.Count 0 "empty"
            }
            test "integer and bool dtypes convert" {
                let data = Array.concat [ BitConverter.GetBytes(-5L); BitConverter.GetBytes(70000); BitConverter.GetBytes(-3s); [| 0xFEuy; 200uy; 0uy; 7uy |] ]
                let h = """{"l":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"i":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},"s":{"dtype":"I16","shape":[1],"data_offsets":[12,14]},"b":{"dtype":"I8","shape":[1],"data_offsets":[14,15]},"u":{"dtype":"U8","shape":[1],"data_offsets":[15,16]},"t":{"dtype":"BOOL","shape":[2],"data_offsets":[16,18]}}"""
                use f = SafetensorsFile.OpenFromBytes(image h data)
                Expect.equal (f.ReadInt64 "l") [| -5L |] "I64"
                Expect.equal (f.ReadFloat32 "i") [| 70000.0f |] "I32"
                Expect.equal (f.ReadFloat64 "s") [| -3.0 |] "I16"
                Expect.equal (f.ReadInt64 "b") [| -2L |] "I8"
                Expect.equal (f.ReadInt64 "u") [| 200L |] "U8"
                Expect.equal (f.ReadFloat32 "t") [| 0.0f; 1.0f |] "BOOL"
            }
        ]

        testList "checkpoint" [
            let writeSharded (dir: TempDir) =
                SafetensorsWriter.Write(dir.File "model-00001-of-00002.safetensors",
                                        [ struct ("a", TensorDType.F32, [| 2L |], [| 1.0f; 2.0f |]); struct ("b", TensorDType.BF16, [| 1L |], [| 3.0f |]) ])
                SafetensorsWriter.Write(dir.File "model-00002-of-00002.safetensors",
                                        [ struct ("c", TensorDType.F32, [| 1L; 3L |], [| 4.0f; 5.0f; 6.0f |]) ])
            let index (map: (string * string) list) =
                let entries = map |> List.map (fun (t, s) -> sprintf "\"%s\": \"%s\"" t s)
                "{\"metadata\": {\"total_size\": 22}, \"weight_map\": {" + String.Join(", ", entries) + "}}"
            let goodMap = [ "a", "model-00001-of-00002.safetensors"; "b", "model-00001-of-00002.safetensors"; "c", "model-00002-of-00002.safetensors" ]

            test "a sharded checkpoint loads" {
                use dir = new TempDir()
                writeSharded dir
                File.WriteAllText(dir.File "model.safetensors.index.json", index goodMap)
                use c = SafetensorsCheckpoint.Open dir.Path
                Expect.equal (List.ofSeq c.Names) [ "a"; "b"; "c" ] "names"
                Expect.equal c.Files.Count 2 "two shards"
                Expect.equal (c.ReadFloat32 "a") [| 1.0f; 2.0f |] "a"
                Expect.equal (c.ReadFloat64 "b") [| 3.0 |] "b"
                Expect.equal (List.ofSeq (c.Shape "c")) [ 1L; 3L ] "shape c"
                Expect.equal (c.DType "b") TensorDType.BF16 "dtype b"
                Expect.equal c.Metadata["total_size"] "22" "index metadata"
                Expect.isFalse (c.Contains "d") "Contains"
                throws<TensorNotFoundException> (fun () -> c.ReadFloat32 "d" |> ignore) "unknown"
                use c2 = SafetensorsCheckpoint.Open(dir.File "model.safetensors.index.json")
                Expect.equal c2.Names.Count 3 "opened by index path"
            }

            let expectCheckpointError (setup: TempDir -> unit) (mention: string list) =
                use dir = new TempDir()
                setup dir
                let ex = throwsOf<LxtImportException> (fun () -> (SafetensorsCheckpoint.Open dir.Path).Dispose()) "checkpoint error"
                for m in mention do Expect.stringContains ex.Message m "message"
                ex

            test "index places a tensor in the wrong shard" {
                let ex = expectCheckpointError (fun dir ->
                            writeSharded dir
                            File.WriteAllText(dir.File "model.safetensors.index.json",
                                              index [ "a", "model-00001-of-00002.safetensors"; "b", "model-00001-of-00002.safetensors"; "c", "model-00001-of-00002.safetensors" ]))
                            [ "'c'"; "model-00001-of-00002.safetensors" ]
                Expect.isTrue (box ex :? SafetensorsCheckpointException) "typed"
            }
            test "index names a missing shard" {
                expectCheckpointError (fun dir ->
                    writeSharded dir
                    File.WriteAllText(dir.File "model.safetensors.index.json", index (goodMap @ [ "d", "model-00003-of-00003.safetensors" ])))
                    [ "model-00003-of-00003.safetensors"; "does not exist" ] |> ignore
            }
            test "shard holds a tensor the index does not list" {
                expectCheckpointError (fun dir ->
                    writeSharded dir
                    File.WriteAllText(dir.File "model.safetensors.index.json", index (List.take 2 goodMap @ [ "c", "model-00002-of-00002.safetensors" ] |> List.filter (fun (t, _) -> t <> "b"))))
                    [ "'b'"; "does not list" ] |> ignore
            }
            test "a tensor in two shards" {
                expectCheckpointError (fun dir ->
                    writeSharded dir
                    SafetensorsWriter.Write(dir.File "model-00002-of-00002.safetensors",
                                            [ struct ("c", TensorDType.F32, [| 1L; 3L |], [| 4.0f; 5.0f; 6.0f |]); struct ("a", TensorDType.F32, [| 1L |], [| 0.0f |]) ])
                    File.WriteAllText(dir.File "model.safetensors.index.json", index goodMap))
                    [ "'a'"; "two shards" ] |> ignore
            }
            test "index with a shard path outside the folder" {
                expectCheckpointError (fun dir ->
                    writeSharded dir
                    File.WriteAllText(dir.File "model.safetensors.index.json", index [ "a", "../model-00001-of-00002.safetensors" ]))
                    [ "plain file name" ] |> ignore
            }
            test "malformed index" {
                expectCheckpointError (fun dir -> File.WriteAllText(dir.File "model.safetensors.index.json", "{\"weight_map\": [")) [ "not valid JSON" ] |> ignore
                expectCheckpointError (fun dir -> File.WriteAllText(dir.File "model.safetensors.index.json", "{\"metadata\": {}}")) [ "weight_map" ] |> ignore
                expectCheckpointError (fun dir -> File.WriteAllText(dir.File "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"x\", \"a\": \"x\"}}")) [ "twice" ] |> ignore
            }
            test "a malformed shard raises a format error" {
                use dir = new TempDir()
                writeSharded dir
                File.WriteAllText(dir.File "model.safetensors.index.json", index goodMap)
                File.WriteAllBytes(dir.File "model-00002-of-00002.safetensors", [| 1uy; 2uy |])
                let ex = throwsOf<SafetensorsFormatException> (fun () -> (SafetensorsCheckpoint.Open dir.Path).Dispose()) "format"
                Expect.stringContains ex.Message "model-00002-of-00002.safetensors" "names the shard"
            }
            test "a folder without a checkpoint says what was expected" {
                let ex = expectCheckpointError ignore [ "model.safetensors"; "model.safetensors.index.json" ]
                Expect.isTrue (box ex :? LxtImportException) "import exception"
            }
        ]

        testList "robustness" [
            testPropertyWithConfig robustnessConfig "any bytes in memory: load and read everything, or SafetensorsFormatException"
                (Prop.forAll (Arb.fromGen genAnyImage) (fun bytes ->
                    loadOrFormatError (fun () -> SafetensorsFile.OpenFromBytes(bytes, "fuzz.safetensors")) |> ignore
                    true))

            testPropertyWithConfig { robustnessConfig with maxTest = 500 } "any bytes as a memory-mapped file: same outcome as in memory"
                (Prop.forAll (Arb.fromGen genAnyImage) (fun bytes ->
                    use dir = new TempDir()
                    let path = dir.File "fuzz.safetensors"
                    File.WriteAllBytes(path, bytes)
                    let fromFile = loadOrFormatError (fun () -> SafetensorsFile.Open path)
                    let fromMemory = loadOrFormatError (fun () -> SafetensorsFile.OpenFromBytes(bytes, "fuzz.safetensors"))
                    fromFile = fromMemory))

            test "generators reach both outcomes" {
                let samples = Gen.sampleWithSize 20 600 genAnyImage
                let outcomes = samples |> Array.map (fun b -> loadOrFormatError (fun () -> SafetensorsFile.OpenFromBytes b))
                let loaded = outcomes |> Array.filter Result.isOk |> Array.length
                let nonEmpty = outcomes |> Array.filter (function Ok n -> n > 0 | _ -> false) |> Array.length
                Expect.isGreaterThan loaded 30 "some inputs load"
                Expect.isGreaterThan nonEmpty 10 "some inputs with tensors load"
                Expect.isGreaterThan (samples.Length - loaded) 200 "many inputs are rejected"
            }

            test "fuzz corpus: every input loads or raises SafetensorsFormatException" {
                let folder = corpusFolder ()
                Expect.isTrue (Directory.Exists folder) $"corpus folder {folder} exists"
                let files = Directory.GetFiles folder
                Expect.isGreaterThan files.Length 5 "corpus has inputs"
                for file in files do
                    loadOrFormatError (fun () -> SafetensorsFile.Open file) |> ignore
                    loadOrFormatError (fun () -> SafetensorsFile.OpenFromBytes(File.ReadAllBytes file, file)) |> ignore
            }
        ]
    ]
