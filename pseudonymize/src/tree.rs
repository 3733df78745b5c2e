//! The compiled field tree of a policy, flattened into an arena: the record path and the
//! leak guard walk an event alongside it, naming nodes by index, so that what they record
//! about an event holds no borrow of the policy.

use crate::json::write_string;
use crate::policy::Rule;

/// Index of a node in its [`Tree`].
pub(crate) type NodeId = u32;

/// The top-level object of every event.
pub(crate) const ROOT: NodeId = 0;

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// A field with its rule.
    Leaf(Rule),
    /// An object whose fields are listed, by name.
    Object(Vec<Field>),
    /// An array whose every element is the inner node.
    Array(NodeId),
}

/// A field of an object node, with what makes finding it by its key cheap.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub(crate) name: Box<str>,
    pub(crate) node: NodeId,
    /// The first eight bytes of the name, zero-padded, as a word.
    prefix: u64,
}

/// The first eight bytes of `key`, zero-padded, as a word.
pub(crate) fn prefix_of(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(word) => u64::from_le_bytes(*word),
        None => key
            .iter()
            .rev()
            .fold(0, |word, &b| (word << 8) | u64::from(b)),
    }
}

/// One node: its shape, its path for messages, and its key as written in the output.
#[derive(Debug, Clone)]
pub(crate) struct TreeNode {
    pub(crate) shape: Shape,
    /// `customer.email`, `basket.items[]`; empty for the root.
    pub(crate) path: Box<str>,
    /// `"email":`, the output's spelling of the key (empty for the root and array elements).
    pub(crate) key_json: Box<[u8]>,
}

/// The arena; node 0 is the root object.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    nodes: Vec<TreeNode>,
}

impl Tree {
    /// A tree holding only an empty root object.
    pub(crate) fn new() -> Self {
        Self {
            nodes: vec![TreeNode {
                shape: Shape::Object(Vec::new()),
                path: "".into(),
                key_json: Box::default(),
            }],
        }
    }

    /// The node `id`.
    pub(crate) fn node(&self, id: NodeId) -> &TreeNode {
        &self.nodes[id as usize]
    }

    /// How many nodes there are.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The field `key` of object node `object`.
    pub(crate) fn child(&self, object: NodeId, key: &[u8]) -> Option<NodeId> {
        self.field(object, key, prefix_of(key), 0)
            .map(|index| self.field_node(object, index))
    }

    /// The index of field `key` (whose first eight bytes, zero-padded, are `prefix`) among
    /// the fields of object node `object`, trying index `hint` first, then the others in
    /// turn. A candidate costs two word comparisons (first bytes, length).
    pub(crate) fn field(
        &self,
        object: NodeId,
        key: &[u8],
        prefix: u64,
        hint: usize,
    ) -> Option<usize> {
        let Shape::Object(fields) = &self.node(object).shape else {
            return None;
        };
        let count = fields.len();
        let mut index = if hint < count { hint } else { 0 };
        for _ in 0..count {
            let field = &fields[index];
            if field.prefix == prefix
                && field.name.len() == key.len()
                && (key.len() <= 8 || field.name.as_bytes()[8..] == key[8..])
            {
                return Some(index);
            }
            index += 1;
            if index == count {
                index = 0;
            }
        }
        None
    }

    /// The node of field number `index` of object node `object`.
    pub(crate) fn field_node(&self, object: NodeId, index: usize) -> NodeId {
        match &self.node(object).shape {
            Shape::Object(fields) => fields[index].node,
            _ => unreachable!("`field` found it in an object node"),
        }
    }

    /// The node at an object path (no `[]`), if every step is an object field.
    pub(crate) fn find(&self, segments: &[String]) -> Option<NodeId> {
        segments.iter().try_fold(ROOT, |object, segment| {
            self.child(object, segment.as_bytes())
        })
    }

    /// The rule of a leaf node.
    pub(crate) fn rule(&self, id: NodeId) -> Option<&Rule> {
        match &self.node(id).shape {
            Shape::Leaf(rule) => Some(rule),
            _ => None,
        }
    }

    /// Adds a node under `parent` (an object, with `key`, or an array, without).
    fn push(&mut self, parent: NodeId, key: Option<&str>, shape: Shape) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).expect("a policy has fewer than 2^32 fields");
        let parent_path = &self.node(parent).path;
        let (path, key_json) = match key {
            Some(key) => {
                let mut key_json = Vec::with_capacity(key.len() + 3);
                write_string(&mut key_json, key);
                key_json.push(b':');
                let path = if parent_path.is_empty() {
                    key.to_string()
                } else {
                    format!("{parent_path}.{key}")
                };
                (path, key_json)
            }
            None => (format!("{parent_path}[]"), Vec::new()),
        };
        self.nodes.push(TreeNode {
            shape,
            path: path.into(),
            key_json: key_json.into(),
        });
        match (&mut self.nodes[parent as usize].shape, key) {
            (Shape::Object(fields), Some(key)) => fields.push(Field {
                name: key.into(),
                node: id,
                prefix: prefix_of(key.as_bytes()),
            }),
            (Shape::Array(element), None) => *element = id,
            _ => unreachable!("objects get keyed children, arrays one element"),
        }
        id
    }

    /// Adds `rule` at `segments` (object keys, `[]` for array elements); a path that is a
    /// leaf, an object and an array at once is an error naming `full`.
    pub(crate) fn insert(
        &mut self,
        segments: &[String],
        rule: Rule,
        full: &str,
    ) -> Result<(), Conflict> {
        let conflict = |tree: &Self, at: NodeId| Conflict {
            field: full.to_owned(),
            at: tree.node(at).path.to_string(),
        };
        let mut current = ROOT;
        for (index, segment) in segments.iter().enumerate() {
            let wanted = match segments.get(index + 1).map(String::as_str) {
                None => Shape::Leaf(rule.clone()),
                Some("[]") => Shape::Array(NodeId::MAX),
                Some(_) => Shape::Object(Vec::new()),
            };
            let existing = match (&self.node(current).shape, segment == "[]") {
                (Shape::Array(element), true) => (*element != NodeId::MAX).then_some(*element),
                (Shape::Object(_), false) => self.child(current, segment.as_bytes()),
                _ => return Err(conflict(self, current)),
            };
            current = match existing {
                Some(id)
                    if !matches!(wanted, Shape::Leaf(_))
                        && std::mem::discriminant(&self.node(id).shape)
                            == std::mem::discriminant(&wanted) =>
                {
                    id
                }
                // A leaf, or a node of another shape, is already there.
                Some(id) => return Err(conflict(self, id)),
                None => {
                    let key = (segment != "[]").then_some(segment.as_str());
                    self.push(current, key, wanted)
                }
            };
        }
        Ok(())
    }
}

/// Two rules of a policy that want different shapes at one path.
#[derive(Debug, thiserror::Error)]
#[error("field `{field}` conflicts with another rule on `{at}` (a path is either a leaf, an object or an array)")]
pub(crate) struct Conflict {
    /// The path of the rule being added.
    field: String,
    /// Where it meets the other rule.
    at: String,
}
