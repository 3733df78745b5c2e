//! One pass over an event's bytes alongside a policy's tree, shared by the record path and
//! the leak guard.
//!
//! [`Walk::run`] validates the whole payload (syntax, nesting, no field twice in an
//! object, the policy's `[limits]`) and records, in document order, one [`Step`] per container opened or closed
//! and per value of a policy leaf, as spans of the payload. It never stops at the first
//! field the policy does not expect: it notes the first such [`Problem`] with the step it
//! happened at and reads on, because a syntax error further on must win (as it does for a
//! parser that reads the whole payload first) and because the tenant and the required
//! fields may come after it. The values of watched fields (tenant, event time, required)
//! are captured even when their rule drops them.
//!
//! A `Walk` is scratch space: reuse one per thread and nothing is allocated per event
//! once its buffers have grown.

use crate::error::Reason;
use crate::json::{unescape, unescaped_len, Kind, Reader, SyntaxError, SyntaxKind, MAX_DEPTH};
use crate::policy::Limits;
use crate::tree::{prefix_of, NodeId, Shape, Tree, ROOT};

/// Where a member of an object (its key, `:` and value) or an element of an array starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Member {
    /// Offset of the key's opening quote (of the value, for an array element).
    pub(crate) start: usize,
    /// Whether the bytes from `start` to the value are exactly the key as the policy spells
    /// it and a `:` (no escape, no whitespace): then they can be copied as they are.
    pub(crate) plain: bool,
}

/// One thing met in the payload, in document order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// `{` or `[` (at offset `at`) of a policy object or array node (the root included).
    Open {
        node: NodeId,
        array: bool,
        member: Member,
        at: usize,
    },
    /// The matching `}` or `]`, at offset `at`.
    Close { array: bool, at: usize },
    /// A value: of a leaf (any kind, containers included, span covering them whole), or
    /// `null` for an object or array node. A string's span excludes its quotes.
    Value {
        node: NodeId,
        kind: Kind,
        start: usize,
        end: usize,
        member: Member,
    },
}

impl Step {
    /// Where a value's text ends, closing quote included.
    pub(crate) fn raw_end(kind: Kind, end: usize) -> usize {
        end + usize::from(matches!(kind, Kind::String { .. }))
    }

    /// Where a value's text starts, opening quote included.
    pub(crate) fn raw_start(kind: Kind, start: usize) -> usize {
        start - usize::from(matches!(kind, Kind::String { .. }))
    }
}

/// What the policy cannot accept, found while walking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Problem {
    /// A field the policy does not list, in object node `parent`.
    Unknown { parent: NodeId },
    /// Object node `node` holds a value of another kind.
    NotAnObject { node: NodeId, kind: Kind },
    /// Array node `node` holds a value of another kind.
    NotAnArray { node: NodeId, kind: Kind },
}

/// Why a payload could not be walked at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Malformed {
    /// Not JSON, or nested deeper than the reader's bound.
    Syntax(SyntaxError),
    /// The top-level value is not an object.
    NotAnObject(Kind),
    /// An object holds the policy field `node` twice.
    Duplicate(NodeId),
    /// A limit of the policy is exceeded at node `node` (inside its value, for depth).
    Limit { limit: Limit, node: NodeId },
}

/// A limit of a policy's `[limits]` checked while walking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `max_depth`.
    Depth,
    /// `max_string_bytes`.
    StringBytes,
    /// `max_array_len`.
    ArrayLen,
    /// `max_object_fields`.
    ObjectFields,
}

impl Limit {
    /// The reason of a rejection: `too_deep` for depth (as for the reader's own bound),
    /// `too_large` for the sizes (as for the payload's).
    pub(crate) fn reason(self) -> Reason {
        match self {
            Self::Depth => Reason::TooDeep,
            Self::StringBytes | Self::ArrayLen | Self::ObjectFields => Reason::TooLarge,
        }
    }

    /// The message of a rejection: the limit, its value and where, from the policy's paths.
    pub(crate) fn describe(self, limits: &Limits, path: &str) -> String {
        let at = if path.is_empty() {
            "the event".to_owned()
        } else {
            format!("`{path}`")
        };
        let (exceeds, name, value, unit) = match self {
            Self::Depth => ("nests deeper", "max_depth", limits.max_depth, "levels"),
            Self::StringBytes => (
                "holds a string longer",
                "max_string_bytes",
                limits.max_string_bytes,
                "bytes",
            ),
            Self::ArrayLen => (
                "holds more",
                "max_array_len",
                limits.max_array_len,
                "elements",
            ),
            Self::ObjectFields => (
                "holds more",
                "max_object_fields",
                limits.max_object_fields,
                "fields",
            ),
        };
        format!("{at} {exceeds} than `limits.{name}` = {value} {unit}")
    }
}

/// A captured value: its kind and span.
pub(crate) type Captured = (Kind, usize, usize);

/// Scratch space and results of walking one payload.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// What was met, in document order.
    pub(crate) steps: Vec<Step>,
    /// The first problem and the number of steps recorded before it.
    pub(crate) problem: Option<(usize, Problem)>,
    /// Per node: its value, if watched and met.
    captured: Vec<Option<Captured>>,
    /// The watched nodes.
    watched: Vec<NodeId>,
    /// Per node: whether it is watched.
    is_watched: Vec<bool>,
    /// Per node: the object instance it was last seen in (duplicate detection).
    seen_in: Vec<u64>,
    /// Per object node, the index of its first field in the last event; per field node,
    /// the index of the field that followed it. Producers keep their field order, so this
    /// predicts the next key.
    follows: Vec<usize>,
    /// Counts object instances, across payloads.
    objects: u64,
    /// The first duplicate field or exceeded limit, in document order.
    fault: Option<Malformed>,
    limits: Limits,
    key: String,
}

impl Walk {
    /// Scratch space for `tree` under `limits`, capturing the values of the `watched` nodes.
    pub(crate) fn new(tree: &Tree, limits: &Limits, watched: &[NodeId]) -> Self {
        let mut is_watched = vec![false; tree.len()];
        for &node in watched {
            is_watched[node as usize] = true;
        }
        Self {
            steps: Vec::with_capacity(64),
            captured: vec![None; tree.len()],
            watched: watched.to_vec(),
            is_watched,
            seen_in: vec![0; tree.len()],
            follows: vec![0; tree.len()],
            limits: limits.clone(),
            ..Self::default()
        }
    }

    /// The value of watched node `node` in the last payload, if it had one.
    pub(crate) fn captured(&self, node: NodeId) -> Option<Captured> {
        self.captured[node as usize]
    }

    /// Walks `payload` (valid UTF-8) alongside `tree`.
    pub(crate) fn run(&mut self, tree: &Tree, payload: &str) -> Result<(), Malformed> {
        self.steps.clear();
        self.problem = None;
        self.fault = None;
        for &node in &self.watched {
            self.captured[node as usize] = None;
        }
        let bytes = payload.as_bytes();
        let mut reader = Reader::new(bytes);
        let (kind, at, _) = reader.value_start().map_err(Malformed::Syntax)?;
        if kind == Kind::Object {
            self.steps.push(Step::Open {
                node: ROOT,
                array: false,
                member: Member {
                    start: at,
                    plain: true,
                },
                at,
            });
            self.object(tree, &mut reader, payload, ROOT, 1)
                .map_err(Malformed::Syntax)?;
        } else {
            reader.skip_rest(kind, 1).map_err(Malformed::Syntax)?;
        }
        reader.end().map_err(Malformed::Syntax)?;
        if kind != Kind::Object {
            return Err(Malformed::NotAnObject(kind));
        }
        match self.fault {
            Some(fault) => Err(fault),
            None => Ok(()),
        }
    }

    fn note(&mut self, problem: Problem) {
        if self.problem.is_none() {
            self.problem = Some((self.steps.len(), problem));
        }
    }

    /// Notes a limit exceeded at `node`, unless something came first; reading goes on, so
    /// that a syntax error further on still wins.
    fn exceeded(&mut self, limit: Limit, node: NodeId) {
        self.fault.get_or_insert(Malformed::Limit { limit, node });
    }

    /// Steps over the rest of a value of `node` that the walk does not follow (a field the
    /// policy does not know, a container in a leaf), checking its depth.
    fn skip(
        &mut self,
        reader: &mut Reader<'_>,
        kind: Kind,
        depth: usize,
        node: NodeId,
    ) -> Result<(), SyntaxError> {
        if reader.skip_rest(kind, depth)? > self.limits.max_depth {
            self.exceeded(Limit::Depth, node);
        }
        Ok(())
    }

    /// After the `{` of object node `node`, up to and including its `}`.
    fn object(
        &mut self,
        tree: &Tree,
        reader: &mut Reader<'_>,
        payload: &str,
        node: NodeId,
        depth: usize,
    ) -> Result<(), SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(too_deep(reader));
        }
        if depth > self.limits.max_depth {
            self.exceeded(Limit::Depth, node);
        }
        self.objects += 1;
        let instance = self.objects;
        // The node whose successor the next key is: the object itself, then each field.
        let mut previous = node;
        let mut members = 0;
        if !reader.empty_container(b'}') {
            loop {
                members += 1;
                if members > self.limits.max_object_fields {
                    self.exceeded(Limit::ObjectFields, node);
                }
                let (start, end, escaped) = reader.key()?;
                let raw = &payload[start..end];
                let (key, prefix) = if escaped {
                    let key = unescape(raw, &mut self.key);
                    (key, prefix_of(key.as_bytes()))
                } else {
                    (raw, word_at(payload.as_bytes(), start, end - start))
                };
                let hint = self.follows[previous as usize];
                let found = tree.field(node, key.as_bytes(), prefix, hint);
                match found.map(|index| (index, tree.field_node(node, index))) {
                    Some((index, child)) => {
                        self.follows[previous as usize] = index;
                        previous = child;
                        let seen = &mut self.seen_in[child as usize];
                        if *seen == instance {
                            self.fault.get_or_insert(Malformed::Duplicate(child));
                        }
                        *seen = instance;
                        // Plain: `"key":` with nothing in between (the value is checked next).
                        let after_colon = reader.offset();
                        let member = Member {
                            start: start - 1,
                            plain: !escaped && after_colon == end + 2,
                        };
                        self.value(
                            tree,
                            reader,
                            payload,
                            child,
                            depth,
                            Some((member, after_colon)),
                        )?;
                    }
                    None => {
                        self.note(Problem::Unknown { parent: node });
                        let (kind, _, _) = reader.value_start()?;
                        self.skip(reader, kind, depth + 1, node)?;
                    }
                }
                if !reader.next_member(b'}')? {
                    break;
                }
            }
        }
        self.steps.push(Step::Close {
            array: false,
            at: reader.offset() - 1,
        });
        Ok(())
    }

    /// After the `[` of array node `node` (elements `element`), up to its `]`.
    fn array(
        &mut self,
        tree: &Tree,
        reader: &mut Reader<'_>,
        payload: &str,
        (node, element): (NodeId, NodeId),
        depth: usize,
    ) -> Result<(), SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(too_deep(reader));
        }
        if depth > self.limits.max_depth {
            self.exceeded(Limit::Depth, node);
        }
        let mut elements = 0;
        if !reader.empty_container(b']') {
            loop {
                elements += 1;
                if elements > self.limits.max_array_len {
                    self.exceeded(Limit::ArrayLen, node);
                }
                self.value(tree, reader, payload, element, depth, None)?;
                if !reader.next_member(b']')? {
                    break;
                }
            }
        }
        self.steps.push(Step::Close {
            array: true,
            at: reader.offset() - 1,
        });
        Ok(())
    }

    /// One value of node `node`, inside a container at `depth`: a member of an object
    /// (`member` says where its key starts, and where its `:` ends) or an element of an
    /// array (`None`).
    fn value(
        &mut self,
        tree: &Tree,
        reader: &mut Reader<'_>,
        payload: &str,
        node: NodeId,
        depth: usize,
        member: Option<(Member, usize)>,
    ) -> Result<(), SyntaxError> {
        let (kind, start, end) = reader.value_start()?;
        let raw_start = Step::raw_start(kind, start);
        let member = match member {
            Some((member, after_colon)) => Member {
                plain: member.plain && raw_start == after_colon,
                ..member
            },
            None => Member {
                start: raw_start,
                plain: true,
            },
        };
        match (&tree.node(node).shape, kind) {
            (Shape::Object(_), Kind::Object) => {
                self.steps.push(Step::Open {
                    node,
                    array: false,
                    member,
                    at: start,
                });
                self.object(tree, reader, payload, node, depth + 1)
            }
            (Shape::Array(element), Kind::Array) => {
                self.steps.push(Step::Open {
                    node,
                    array: true,
                    member,
                    at: start,
                });
                self.array(tree, reader, payload, (node, *element), depth + 1)
            }
            (Shape::Leaf(_), _) | (_, Kind::Null) => {
                let end = match kind {
                    Kind::Object | Kind::Array => {
                        self.skip(reader, kind, depth + 1, node)?;
                        reader.offset()
                    }
                    Kind::String { escaped } => {
                        let raw = &payload.as_bytes()[start..end];
                        let len = if escaped {
                            unescaped_len(raw)
                        } else {
                            raw.len()
                        };
                        if len > self.limits.max_string_bytes {
                            self.exceeded(Limit::StringBytes, node);
                        }
                        end
                    }
                    _ => end,
                };
                if self.is_watched[node as usize] {
                    self.captured[node as usize] = Some((kind, start, end));
                }
                self.steps.push(Step::Value {
                    node,
                    kind,
                    start,
                    end,
                    member,
                });
                Ok(())
            }
            (Shape::Object(_), _) => {
                self.note(Problem::NotAnObject { node, kind });
                self.skip(reader, kind, depth + 1, node)
            }
            (Shape::Array(_), _) => {
                self.note(Problem::NotAnArray { node, kind });
                self.skip(reader, kind, depth + 1, node)
            }
        }
    }
}

/// The `len` bytes at `start` (at most eight), zero-padded, as a word, read whole when
/// the payload goes on long enough.
fn word_at(bytes: &[u8], start: usize, len: usize) -> u64 {
    match bytes.get(start..).and_then(<[u8]>::first_chunk::<8>) {
        Some(word) if len < 8 => u64::from_le_bytes(*word) & ((1u64 << (8 * len)) - 1),
        Some(word) => u64::from_le_bytes(*word),
        None => prefix_of(&bytes[start..start + len]),
    }
}

fn too_deep(reader: &Reader<'_>) -> SyntaxError {
    SyntaxError {
        kind: SyntaxKind::TooDeep,
        offset: reader.offset().saturating_sub(1),
    }
}

/// The message naming where an unknown field is, without its name (a key can be personal
/// data too: `{"alice@example.com": 1}`).
pub(crate) fn unknown_field_at(tree: &Tree, parent: NodeId) -> String {
    let path = &tree.node(parent).path;
    if path.is_empty() {
        "an unknown field at the top level".to_owned()
    } else {
        format!("an unknown field in `{path}`")
    }
}
