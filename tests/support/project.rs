//! Small C and C++ projects for the compile tests: several translation units with headers,
//! macros, static inlines, structs, templates and STL containers, each linking into a program
//! with known output.
//!
//! Neighbours: tests/fixture.rs checks they build locally; end-to-end tests compile them through
//! hoardcc and stock distcc and compare the objects with local ones.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A temporary directory holding sources (no Makefile). Drop removes it.
pub struct Project {
    dir: TempDir,
    sources: Vec<PathBuf>,
    expected_stdout: &'static str,
}

const C_HEADER: &str = r#"#ifndef GEOM_H
#define GEOM_H

#include <stddef.h>

#define SQUARE(x) ((x) * (x))
#define CLAMP(v, lo, hi) ((v) < (lo) ? (lo) : (v) > (hi) ? (hi) : (v))
#define STR_(x) #x
#define STR(x) STR_(x)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FOR_EACH_AXIS(M) M(x) M(y) M(z)

struct vec3 {
    int x, y, z;
};

static inline int vec3_dot(struct vec3 a, struct vec3 b)
{
    return a.x * b.x + a.y * b.y + a.z * b.z;
}

int vec3_norm2(struct vec3 v);
int clamp_sum(const int *xs, size_t n, int lo, int hi);
unsigned checksum(const char *s);
const char *axis_names(void);

#endif
"#;

const C_MAIN: &str = r#"#include <stdio.h>
#include "geom.h"

int main(void)
{
    struct vec3 v = { 1, 2, 3 };
    int xs[] = { -5, 3, 12, 7 };
    printf("norm2=%d dot=%d\n", vec3_norm2(v), vec3_dot(v, v));
    printf("clamp=%d\n", clamp_sum(xs, sizeof xs / sizeof xs[0], 0, 10));
    printf("sum=%u axes=%s\n", checksum("hoardcc"), axis_names());
    return 0;
}
"#;

const C_VEC: &str = r#"#include "geom.h"

#define AXIS_SQUARE(a) + SQUARE(v.a)

int vec3_norm2(struct vec3 v)
{
    return 0 FOR_EACH_AXIS(AXIS_SQUARE);
}
"#;

const C_CLAMP: &str = r#"#include "geom.h"

int clamp_sum(const int *xs, size_t n, int lo, int hi)
{
    int CAT(to, tal) = 0;
    for (size_t i = 0; i < n; i++)
        total += CLAMP(xs[i], lo, hi);
    return total;
}
"#;

const C_STR: &str = r#"#include <string.h>
#include "geom.h"

#define AXIS_NAME(a) STR(a)

unsigned checksum(const char *s)
{
    unsigned h = 0;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        h = h * 31u + (unsigned char)s[i];
    return h % 100000u;
}

const char *axis_names(void)
{
    return FOR_EACH_AXIS(AXIS_NAME);
}
"#;

const CXX_HEADER: &str = r#"#pragma once
#include <map>
#include <string>
#include <vector>

template <typename T>
class Stack {
public:
    void push(const T &v) { items_.push_back(v); }
    T pop()
    {
        T v = items_.back();
        items_.pop_back();
        return v;
    }
    std::size_t size() const { return items_.size(); }

private:
    std::vector<T> items_;
};

template <typename K, typename V>
V sum_values(const std::map<K, V> &m)
{
    V total{};
    for (const auto &kv : m)
        total += kv.second;
    return total;
}

std::map<std::string, int> word_counts(const std::string &text);
std::string reverse_words(const std::string &text);
"#;

const CXX_MAIN: &str = r#"#include <iostream>
#include "words.hpp"

int main()
{
    const std::string text = "to be or not to be";
    auto counts = word_counts(text);
    std::cout << "words=" << sum_values(counts) << " be=" << counts["be"] << "\n";
    std::cout << "reversed=" << reverse_words(text) << "\n";
    return 0;
}
"#;

const CXX_COUNT: &str = r#"#include <sstream>
#include "words.hpp"

std::map<std::string, int> word_counts(const std::string &text)
{
    std::map<std::string, int> counts;
    std::istringstream in(text);
    std::string w;
    while (in >> w)
        ++counts[w];
    return counts;
}
"#;

const CXX_REVERSE: &str = r#"#include <sstream>
#include "words.hpp"

std::string reverse_words(const std::string &text)
{
    Stack<std::string> stack;
    std::istringstream in(text);
    std::string w;
    while (in >> w)
        stack.push(w);
    std::string out;
    while (stack.size() > 0) {
        out += stack.pop();
        if (stack.size() > 0)
            out += ' ';
    }
    return out;
}
"#;

impl Project {
    /// A C project: `geom.h` (macros, a struct, a static inline) and `main.c`, `vec.c`,
    /// `clamp.c`, `str.c`. Links into a program printing [`Project::expected_stdout`].
    pub fn c_multi() -> Project {
        Self::create(
            &[
                ("geom.h", C_HEADER),
                ("main.c", C_MAIN),
                ("vec.c", C_VEC),
                ("clamp.c", C_CLAMP),
                ("str.c", C_STR),
            ],
            &["main.c", "vec.c", "clamp.c", "str.c"],
            "norm2=14 dot=14\nclamp=20\nsum=15052 axes=xyz\n",
        )
    }

    /// A C++ project: `words.hpp` (class and function templates over `<vector>`, `<string>`,
    /// `<map>`) and `main.cpp`, `count.cpp`, `reverse.cpp`. Links into a program printing
    /// [`Project::expected_stdout`].
    pub fn cxx_multi() -> Project {
        Self::create(
            &[
                ("words.hpp", CXX_HEADER),
                ("main.cpp", CXX_MAIN),
                ("count.cpp", CXX_COUNT),
                ("reverse.cpp", CXX_REVERSE),
            ],
            &["main.cpp", "count.cpp", "reverse.cpp"],
            "words=6 be=2\nreversed=be to not or be to\n",
        )
    }

    fn create(files: &[(&str, &str)], sources: &[&str], expected_stdout: &'static str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("hoardcc-project-")
            .tempdir()
            .expect("create project dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod project dir");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write project file");
        }
        Project {
            dir,
            sources: sources.iter().map(PathBuf::from).collect(),
            expected_stdout,
        }
    }

    /// The project directory (run compilers with this as the working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The translation units, relative to [`Project::dir`] (headers are not listed).
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// `name.o` for each source, relative to [`Project::dir`], in [`Project::sources`] order.
    pub fn objects(&self) -> Vec<PathBuf> {
        self.sources.iter().map(|s| s.with_extension("o")).collect()
    }

    /// What the linked program prints on stdout.
    pub fn expected_stdout(&self) -> &str {
        self.expected_stdout
    }
}
