//! Token counting for Python. The counting is `crate::tokens`; this module reads LiteLLM's
//! messages off Python objects (the rules of `_count_messages` and `_count_content_list` in
//! litellm_core_utils/token_counter.py) into the texts to count and the tokens its rules add.
//! A shape it does not read exactly as LiteLLM does gives `None`, and LiteLLM's own function
//! counts that call.

use crate::tokens::{self, Chunking, Encoding, TokenError};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice, PyString, PyTuple};

create_exception!(
    _native,
    TokenCountError,
    PyException,
    "The text could not be counted here (encoder not loaded, the regex gave up, an extrapolation \
     too large to round exactly); count it with LiteLLM's own function."
);

fn to_py_err(e: TokenError) -> PyErr {
    TokenCountError::new_err(e.0)
}

/// Texts of more bytes than this (in all) are counted with the GIL released, so other
/// threads (LiteLLM's counting pool) run meanwhile; below it the release costs more than it
/// gives.
const DETACH_BYTES: usize = 4096;

/// A message shape left to LiteLLM: anything its code would raise on, anything that needs
/// more than text (a high-detail image, a document, a PDF), and any object that is not
/// exactly a dict, list or str where those are expected.
struct Unsupported;

impl From<PyErr> for Unsupported {
    fn from(_: PyErr) -> Self {
        Unsupported
    }
}

type Read<T> = Result<T, Unsupported>;

struct Rules {
    per_message: i64,
    per_name: i64,
    /// `use_default_image_token_count`: every image counts `default_image_tokens`.
    use_default_image_tokens: bool,
    default_image_tokens: i64,
    /// What a low- or auto-detail image counts (`calculate_img_tokens`'s `base_tokens`).
    base_image_tokens: i64,
}

/// What one call of LiteLLM's `_count_messages` would count.
struct Plan<'py> {
    texts: Vec<Bound<'py, PyString>>,
    fixed: i64,
    includes_system: bool,
}

/// `str(value)`, as LiteLLM applies it before counting.
fn str_of<'py>(value: &Bound<'py, PyAny>) -> Read<Bound<'py, PyString>> {
    match value.cast_exact::<PyString>() {
        Ok(s) => Ok(s.clone()),
        Err(_) => Ok(value.str()?),
    }
}

fn exact_dict<'a, 'py>(value: &'a Bound<'py, PyAny>) -> Read<&'a Bound<'py, PyDict>> {
    value.cast_exact::<PyDict>().map_err(|_| Unsupported)
}

fn exact_str<'a>(value: &'a Bound<'_, PyAny>) -> Read<&'a str> {
    Ok(value.cast_exact::<PyString>().map_err(|_| Unsupported)?.to_str()?)
}

impl<'py> Plan<'py> {
    fn read_messages(&mut self, messages: &Bound<'py, PyAny>, rules: &Rules) -> Read<()> {
        let messages: Vec<Bound<'py, PyAny>> = if let Ok(list) = messages.cast_exact::<PyList>() {
            list.iter().collect()
        } else {
            messages
                .cast_exact::<PyTuple>()
                .map_err(|_| Unsupported)?
                .iter()
                .collect()
        };
        for message in &messages {
            self.read_message(exact_dict(message)?, rules)?;
        }
        Ok(())
    }

    fn read_message(&mut self, message: &Bound<'py, PyDict>, rules: &Rules) -> Read<()> {
        self.fixed += rules.per_message;
        for (key, value) in message.iter() {
            if value.is_none() {
                continue;
            }
            match exact_str(&key)? {
                "tool_calls" => self.read_tool_calls(&value)?,
                "function_call" => self.push_str_of_item(exact_dict(&value)?, "arguments")?,
                key => {
                    if let Ok(text) = value.cast::<PyString>() {
                        self.texts.push(text.clone());
                        if key == "name" {
                            self.fixed += rules.per_name;
                        }
                    } else if key == "content" && value.is_instance_of::<PyList>() {
                        let content = value.cast_exact::<PyList>().map_err(|_| Unsupported)?;
                        self.read_content(content, rules)?;
                    } else if key == "search_results" && value.is_instance_of::<PyList>() {
                        return Err(Unsupported);
                    }
                    // Any other key is skipped, as LiteLLM skips it.
                }
            }
        }
        if let Some(role) = message.get_item("role")? {
            if role.eq("system")? {
                self.includes_system = true;
            }
        }
        Ok(())
    }

    /// `str(mapping.get(key, ""))`; a missing key counts nothing.
    fn push_str_of_item(&mut self, mapping: &Bound<'py, PyDict>, key: &str) -> Read<()> {
        if let Some(value) = mapping.get_item(key)? {
            self.texts.push(str_of(&value)?);
        }
        Ok(())
    }

    fn read_tool_calls(&mut self, value: &Bound<'py, PyAny>) -> Read<()> {
        let calls = value.cast_exact::<PyList>().map_err(|_| Unsupported)?;
        for call in calls.iter() {
            let function = exact_dict(&call)?.get_item("function")?.ok_or(Unsupported)?;
            self.push_str_of_item(exact_dict(&function)?, "arguments")?;
        }
        Ok(())
    }

    fn read_content(&mut self, content: &Bound<'py, PyList>, rules: &Rules) -> Read<()> {
        for part in content.iter() {
            if let Ok(text) = part.cast::<PyString>() {
                self.texts.push(text.clone());
                continue;
            }
            let part = exact_dict(&part)?;
            let kind = part.get_item("type")?.ok_or(Unsupported)?;
            match exact_str(&kind)? {
                "text" => self.push_str_of_item(part, "text")?,
                "thinking" | "redacted_thinking" => self.push_str_of_item(part, "thinking")?,
                "tool_reference" => {
                    // str(c.get("tool_name") or "")
                    if let Some(name) = part.get_item("tool_name")? {
                        if name.is_truthy()? {
                            self.texts.push(str_of(&name)?);
                        }
                    }
                }
                "image_url" => self.fixed += image_tokens(part.get_item("image_url")?, rules)?,
                // Anthropic images, documents, files, tool_use/tool_result and unknown types.
                _ => return Err(Unsupported),
            }
        }
        Ok(())
    }
}

/// `_count_image_tokens` without fetching or decoding anything: a default count, or a low-
/// or auto-detail image; a high-detail one needs the image's size and is left to LiteLLM.
fn image_tokens(image_url: Option<Bound<'_, PyAny>>, rules: &Rules) -> Read<i64> {
    let image_url = image_url.ok_or(Unsupported)?;
    let detail = if let Ok(spec) = image_url.cast_exact::<PyDict>() {
        let detail = match spec.get_item("detail")? {
            None => "auto",
            Some(detail) => match exact_str(&detail)? {
                "low" => "low",
                "high" => "high",
                "auto" => "auto",
                _ => return Err(Unsupported),
            },
        };
        if !spec.get_item("url")?.ok_or(Unsupported)?.is_truthy()? {
            return Err(Unsupported);
        }
        detail
    } else {
        // A plain URL string, which LiteLLM refuses when it strips to nothing. A visible ASCII
        // first character surely does not; anything else is left to LiteLLM's strip().
        let url = exact_str(&image_url)?;
        if !url.bytes().next().is_some_and(|b| b.is_ascii_graphic()) {
            return Err(Unsupported);
        }
        "auto"
    };
    if rules.use_default_image_tokens {
        Ok(rules.default_image_tokens)
    } else if detail == "high" {
        Err(Unsupported)
    } else {
        Ok(rules.base_image_tokens)
    }
}

/// One tiktoken encoding with LiteLLM's chunking: what LiteLLM's `count_function` computes.
#[pyclass(name = "TokenCounter", module = "fast_litellm._native", frozen)]
pub struct PyTokenCounter {
    encoding: Encoding,
    chunking: Chunking,
}

impl PyTokenCounter {
    fn count_str(&self, py: Python<'_>, text: &str) -> PyResult<u64> {
        let run = || tokens::count(self.encoding, text, self.chunking);
        if text.len() >= DETACH_BYTES {
            py.detach(run)
        } else {
            run()
        }
        .map_err(to_py_err)
    }

    /// A str with lone surrogates (no UTF-8 form): tiktoken replaces them chunk by chunk
    /// (`encode("utf-16", "surrogatepass").decode("utf-16", "replace")`), so this cuts the
    /// same chunks and samples with Python's slicing and does the same.
    fn count_surrogates(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<u64> {
        let chars = text.len()?;
        if chars <= self.chunking.max_exact_chars {
            return self.count_chunks_py(py, text, 0, chars);
        }
        let (mut sampled_tokens, mut sampled_chars) = (0, 0);
        for (start, len) in tokens::samples(chars, self.chunking) {
            sampled_tokens += self.count_chunks_py(py, text, start, start + len)?;
            sampled_chars += len;
        }
        tokens::extrapolate(sampled_tokens, chars, sampled_chars).map_err(to_py_err)
    }

    /// The chunked count of text[start:end], each chunk made valid as tiktoken makes it.
    fn count_chunks_py(&self, py: Python<'_>, text: &Bound<'_, PyString>, start: usize, end: usize) -> PyResult<u64> {
        let mut total = 0;
        for from in (start..end).step_by(self.chunking.chunk_chars) {
            let to = (from + self.chunking.chunk_chars).min(end);
            let chunk = text.get_item(PySlice::new(py, from as isize, to as isize, 1))?;
            let chunk = chunk.cast_into::<PyString>()?;
            let valid = match chunk.to_str() {
                Ok(_) => chunk,
                Err(_) => chunk
                    .call_method1("encode", ("utf-16", "surrogatepass"))?
                    .call_method1("decode", ("utf-16", "replace"))?
                    .cast_into::<PyString>()?,
            };
            total += tokens::count_exact(self.encoding, valid.to_str()?, usize::MAX).map_err(to_py_err)?;
        }
        Ok(total)
    }
}

#[pymethods]
impl PyTokenCounter {
    #[new]
    #[pyo3(signature = (encoding, chunk_chars = 1024, max_exact_chars = 4_000_000))]
    fn new(encoding: &str, chunk_chars: usize, max_exact_chars: usize) -> PyResult<Self> {
        let encoding = Encoding::from_name(encoding).ok_or_else(|| {
            PyValueError::new_err(format!(
                "encoding {encoding:?} is not served here; one of cl100k_base, o200k_base, p50k_base"
            ))
        })?;
        if chunk_chars == 0 || max_exact_chars == 0 {
            return Err(PyValueError::new_err(
                "chunk_chars and max_exact_chars must be at least 1",
            ));
        }
        Ok(PyTokenCounter {
            encoding,
            chunking: Chunking {
                chunk_chars,
                max_exact_chars,
            },
        })
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        self.encoding.name()
    }

    #[getter]
    fn chunk_chars(&self) -> usize {
        self.chunking.chunk_chars
    }

    #[getter]
    fn max_exact_chars(&self) -> usize {
        self.chunking.max_exact_chars
    }

    /// Loads the encoder in this process now (it loads on the first count otherwise).
    fn preload(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| tokens::preload(self.encoding)).map_err(to_py_err)
    }

    /// LiteLLM's count of one text: chunked, extrapolated past `max_exact_chars`.
    fn count(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<u64> {
        match text.to_str() {
            Ok(s) => self.count_str(py, s),
            Err(_) => self.count_surrogates(py, text),
        }
    }

    /// `count` of each text, in parallel on up to `threads` threads (default: every core),
    /// with the GIL released.
    #[pyo3(signature = (texts, threads = None))]
    fn count_batch(
        &self,
        py: Python<'_>,
        texts: Vec<Bound<'_, PyString>>,
        threads: Option<usize>,
    ) -> PyResult<Vec<u64>> {
        if texts.iter().any(|t| t.to_str().is_err()) {
            return texts.iter().map(|t| self.count(py, t)).collect();
        }
        let strs: Vec<&str> = texts.iter().map(|t| t.to_str()).collect::<PyResult<_>>()?;
        let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        py.detach(|| tokens::count_batch(self.encoding, &strs, self.chunking, threads.max(1)))
            .map_err(to_py_err)
    }

    /// LiteLLM's `_count_messages` of `messages` (a list or tuple of dicts) and whether one
    /// of them has role "system", or None when a message has a shape left to LiteLLM.
    #[pyo3(signature = (
        messages, tokens_per_message, tokens_per_name, use_default_image_token_count,
        default_image_tokens, base_image_tokens
    ))]
    #[allow(clippy::too_many_arguments)]
    fn count_messages(
        &self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        tokens_per_message: i64,
        tokens_per_name: i64,
        use_default_image_token_count: bool,
        default_image_tokens: i64,
        base_image_tokens: i64,
    ) -> PyResult<Option<(i64, bool)>> {
        let rules = Rules {
            per_message: tokens_per_message,
            per_name: tokens_per_name,
            use_default_image_tokens: use_default_image_token_count,
            default_image_tokens,
            base_image_tokens,
        };
        let mut plan = Plan {
            texts: Vec::new(),
            fixed: 0,
            includes_system: false,
        };
        if plan.read_messages(messages, &rules).is_err() {
            return Ok(None);
        }
        let mut strs: Vec<&str> = Vec::with_capacity(plan.texts.len());
        let mut counted = 0;
        for text in &plan.texts {
            match text.to_str() {
                Ok(s) => strs.push(s),
                Err(_) => counted += self.count_surrogates(py, text)?,
            }
        }
        let bytes: usize = strs.iter().map(|s| s.len()).sum();
        let run = || -> Result<u64, TokenError> {
            strs.iter()
                .map(|s| tokens::count(self.encoding, s, self.chunking))
                .sum()
        };
        counted += if bytes >= DETACH_BYTES { py.detach(run) } else { run() }.map_err(to_py_err)?;
        Ok(Some((plan.fixed + counted as i64, plan.includes_system)))
    }

    fn __repr__(&self) -> String {
        format!("<TokenCounter {}>", self.encoding.name())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // At import, before any thread of this process can load an encoder.
    tokens::install_fork_guard();
    m.add_class::<PyTokenCounter>()?;
    m.add("TokenCountError", m.py().get_type::<TokenCountError>())?;
    Ok(())
}
