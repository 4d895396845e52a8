//! Stage: classify (input kinds). Maps a file name or a `-x LANG` value to what gcc would do with
//! that input, and names the preprocessed file for each language (`.c`→`.i`, `.cpp`→`.ii`, …).
//! Used by [`super::classify`] while scanning inputs and by [`super::rewrite`] when building the
//! argv for a stock distccd. Mirrors gcc's `default_compilers` suffix table and distcc's `filename.c`.

/// The source language of a compile job: decides the preprocessed suffix and `-x` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// C (`.c`, `-x c`).
    C,
    /// C++ (`.cc .cpp .cxx .c++ .C .cp .CPP`, `-x c++`).
    Cxx,
    /// Objective-C (`.m`, `-x objective-c`).
    ObjC,
    /// Objective-C++ (`.mm .M`, `-x objective-c++`).
    ObjCxx,
}

/// What gcc does with one input operand, judged by `-x` or by its suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InputKind {
    /// A source file we can preprocess locally and compile remotely.
    Source(Language),
    /// Already preprocessed (`.i .ii .mi .mii`, `-x cpp-output`): compiled locally.
    Preprocessed,
    /// Assembler input (`.s .S .sx`, `-x assembler*`): nothing to distribute.
    Assembler,
    /// A header: compiling it makes a precompiled header, which stays local.
    Header,
    /// A `-x` language we do not know (gcc would reject it or use another front end).
    UnknownLanguage(String),
    /// Anything else: gcc passes it to the linker.
    Other,
}

impl Language {
    /// Suffix of the preprocessed file, without the dot (`i`, `ii`, `mi`, `mii`).
    pub fn preprocessed_suffix(self) -> &'static str {
        match self {
            Language::C => "i",
            Language::Cxx => "ii",
            Language::ObjC => "mi",
            Language::ObjCxx => "mii",
        }
    }

    /// The `-x` name of the source language (`c`, `c++`, `objective-c`, `objective-c++`).
    pub fn x_name(self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cxx => "c++",
            Language::ObjC => "objective-c",
            Language::ObjCxx => "objective-c++",
        }
    }

    /// The `-x` name of this language's preprocessed form (`cpp-output`, `c++-cpp-output`, …).
    pub fn x_preprocessed_name(self) -> &'static str {
        match self {
            Language::C => "cpp-output",
            Language::Cxx => "c++-cpp-output",
            Language::ObjC => "objective-c-cpp-output",
            Language::ObjCxx => "objective-c++-cpp-output",
        }
    }
}

/// The suffix of the last path component (after its last dot), if the dot is not the first
/// character of the component. `src/a.b/foo` has none; `foo.tar.c` has `c`.
pub(crate) fn suffix(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rfind('.') {
        Some(0) | None => None,
        Some(dot) => Some(&name[dot + 1..]),
    }
}

/// `path` with the suffix of its last component removed (directory part kept).
pub(crate) fn strip_suffix(path: &str) -> &str {
    match suffix(path) {
        Some(s) => &path[..path.len() - s.len() - 1],
        None => path,
    }
}

/// The last component of `path`.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Classify an input operand by its suffix, as gcc does when no `-x` is in effect.
pub(crate) fn input_kind_from_name(path: &str) -> InputKind {
    match suffix(path) {
        Some("c") => InputKind::Source(Language::C),
        Some("cc" | "cp" | "cxx" | "cpp" | "CPP" | "c++" | "C") => InputKind::Source(Language::Cxx),
        Some("m") => InputKind::Source(Language::ObjC),
        Some("mm" | "M") => InputKind::Source(Language::ObjCxx),
        Some("i" | "ii" | "mi" | "mii") => InputKind::Preprocessed,
        Some("s" | "S" | "sx") => InputKind::Assembler,
        Some("h" | "hh" | "H" | "hp" | "hxx" | "hpp" | "HPP" | "h++" | "tcc") => InputKind::Header,
        _ => InputKind::Other,
    }
}

/// What a `-x LANG` value means for the inputs after it. `None` for `-x none` (back to suffixes).
pub(crate) fn input_kind_from_x(lang: &str) -> Option<InputKind> {
    Some(match lang {
        "none" => return None,
        "c" => InputKind::Source(Language::C),
        "c++" => InputKind::Source(Language::Cxx),
        "objective-c" => InputKind::Source(Language::ObjC),
        "objective-c++" => InputKind::Source(Language::ObjCxx),
        "cpp-output"
        | "c++-cpp-output"
        | "objective-c-cpp-output"
        | "objc-cpp-output"
        | "objective-c++-cpp-output"
        | "objc++-cpp-output" => InputKind::Preprocessed,
        "assembler" | "assembler-with-cpp" => InputKind::Assembler,
        "c-header"
        | "c++-header"
        | "c++-system-header"
        | "c++-user-header"
        | "objective-c-header"
        | "objective-c++-header" => InputKind::Header,
        other => InputKind::UnknownLanguage(other.to_string()),
    })
}

/// The preprocessed `-x` name for a source `-x` name, e.g. `c++` → `c++-cpp-output`.
pub(crate) fn x_to_preprocessed(lang: &str) -> Option<&'static str> {
    match input_kind_from_x(lang) {
        Some(InputKind::Source(l)) => Some(l.x_preprocessed_name()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_follow_gcc() {
        let cases: &[(&str, InputKind)] = &[
            ("a.c", InputKind::Source(Language::C)),
            ("dir/a.cc", InputKind::Source(Language::Cxx)),
            ("a.cpp", InputKind::Source(Language::Cxx)),
            ("a.cxx", InputKind::Source(Language::Cxx)),
            ("a.c++", InputKind::Source(Language::Cxx)),
            ("a.C", InputKind::Source(Language::Cxx)),
            ("a.cp", InputKind::Source(Language::Cxx)),
            ("a.CPP", InputKind::Source(Language::Cxx)),
            ("a.m", InputKind::Source(Language::ObjC)),
            ("a.mm", InputKind::Source(Language::ObjCxx)),
            ("a.M", InputKind::Source(Language::ObjCxx)),
            ("a.i", InputKind::Preprocessed),
            ("a.ii", InputKind::Preprocessed),
            ("a.s", InputKind::Assembler),
            ("a.S", InputKind::Assembler),
            ("a.sx", InputKind::Assembler),
            ("a.h", InputKind::Header),
            ("a.hpp", InputKind::Header),
            ("a.o", InputKind::Other),
            ("liba.a", InputKind::Other),
            ("a", InputKind::Other),
            (".c", InputKind::Other),
            ("d.c/a", InputKind::Other),
        ];
        for (name, want) in cases {
            assert_eq!(&input_kind_from_name(name), want, "{name}");
        }
    }

    #[test]
    fn x_names() {
        assert_eq!(input_kind_from_x("none"), None);
        assert_eq!(
            input_kind_from_x("c++"),
            Some(InputKind::Source(Language::Cxx))
        );
        assert_eq!(
            input_kind_from_x("assembler-with-cpp"),
            Some(InputKind::Assembler)
        );
        assert_eq!(
            input_kind_from_x("cpp-output"),
            Some(InputKind::Preprocessed)
        );
        assert_eq!(input_kind_from_x("c-header"), Some(InputKind::Header));
        assert_eq!(
            input_kind_from_x("fortran"),
            Some(InputKind::UnknownLanguage("fortran".into()))
        );
        assert_eq!(x_to_preprocessed("c"), Some("cpp-output"));
        assert_eq!(
            x_to_preprocessed("objective-c++"),
            Some("objective-c++-cpp-output")
        );
        assert_eq!(x_to_preprocessed("assembler"), None);
    }

    #[test]
    fn path_parts() {
        assert_eq!(strip_suffix("d/x.obj.o"), "d/x.obj");
        assert_eq!(strip_suffix("d.x/foo"), "d.x/foo");
        assert_eq!(strip_suffix("foo"), "foo");
        assert_eq!(basename("a/b/c.c"), "c.c");
        assert_eq!(basename("c.c"), "c.c");
    }
}
