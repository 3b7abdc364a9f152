//! Given names that are one name, and given names that are two.
//!
//! A small table of English nicknames (Bob is Robert, Liz is Elizabeth),
//! so that a customer who signed up as "Bill" at one store and "William"
//! at another is recognised. Each group is a formal name followed by its
//! common short forms; two names are nicknames of each other when one
//! group holds both.
//!
//! And the commonest given names, each a name of its own: Michael and
//! Michelle, Donald and Donna look alike, but two parents who chose them
//! meant two children, not a typo. Two of them are two names unless they
//! are forms of one (a nickname, or a spelling such as Stephen and
//! Steven), which is what keeps twins of one house and birth date apart
//! (SPEC §11: a household's members have different first names). The
//! comparison (`super::compare::name_level`) still reads two names one
//! edit apart (Carol and Carl) as a typo: a dropped letter makes that
//! pair more often than parents do.

const GROUPS: &[&[&str]] = &[
    &["alexander", "alex", "al", "sandy", "xander"],
    &["alexandra", "alex", "alexa", "sandra", "sandy", "lexi"],
    &["andrew", "andy", "drew"],
    &["anthony", "tony"],
    &["barbara", "barb", "babs"],
    &["benjamin", "ben", "benny", "benji"],
    &["catherine", "cathy", "cat", "kate", "katie", "kathy"],
    &["katherine", "kathy", "kate", "katie", "kat", "kit"],
    &["charles", "charlie", "chuck", "chas"],
    &["christopher", "chris", "kit", "topher"],
    &["christine", "chris", "chrissy", "tina"],
    &["daniel", "dan", "danny"],
    &["david", "dave", "davy"],
    &["deborah", "debbie", "deb"],
    &["donald", "don", "donny"],
    &["dorothy", "dot", "dottie"],
    &["edward", "ed", "eddie", "ted", "ned"],
    &[
        "elizabeth",
        "liz",
        "lizzie",
        "beth",
        "betty",
        "eliza",
        "liza",
        "betsy",
        "libby",
    ],
    &["frances", "fran", "frankie"],
    &["francis", "frank", "frankie"],
    &["frederick", "fred", "freddie"],
    &["gregory", "greg"],
    &["henry", "hank", "harry"],
    &["isabella", "bella", "izzy", "isabel"],
    &["jacob", "jake"],
    &["james", "jim", "jimmy", "jamie"],
    &["jennifer", "jen", "jenny"],
    &["jessica", "jess", "jessie"],
    &["john", "jack", "johnny", "jon"],
    &["jonathan", "jon", "jonny"],
    &["joseph", "joe", "joey"],
    &["joshua", "josh"],
    &["kenneth", "ken", "kenny"],
    &["lawrence", "larry"],
    &["margaret", "maggie", "meg", "peggy", "marge", "margie"],
    &["matthew", "matt"],
    &["michael", "mike", "mikey", "mick"],
    &["nicholas", "nick", "nicky"],
    &["patricia", "pat", "patty", "trish", "tricia"],
    &["patrick", "pat", "paddy"],
    &["peter", "pete"],
    &["rebecca", "becky", "becca"],
    &["richard", "rick", "ricky", "dick", "rich"],
    &["robert", "rob", "bob", "bobby", "robbie", "bert"],
    &["ronald", "ron", "ronnie"],
    &["samantha", "sam", "sammy"],
    &["samuel", "sam", "sammy"],
    &["stephen", "steve", "stevie"],
    &["steven", "steve", "stevie"],
    &["susan", "sue", "susie"],
    &["theodore", "ted", "teddy", "theo"],
    &["thomas", "tom", "tommy"],
    &["timothy", "tim", "timmy"],
    &["victoria", "vicky", "tori"],
    &["william", "will", "bill", "billy", "willie", "liam"],
    &["zachary", "zach", "zack"],
];

/// Whether `a` and `b` (folded, different) are forms of one given name.
pub fn nicknames(a: &str, b: &str) -> bool {
    GROUPS.iter().any(|group| group.contains(&a) && group.contains(&b))
}

/// The commonest given names: the hundred commonest of each sex in the
/// 1990 US census's first-name tables (as the PyPI package `names` 0.3.0
/// ships them), folded and sorted.
const COMMON: &[&str] = &[
    "aaron",
    "adam",
    "alan",
    "albert",
    "alice",
    "amanda",
    "amy",
    "andrea",
    "andrew",
    "angela",
    "ann",
    "anna",
    "anne",
    "annie",
    "anthony",
    "antonio",
    "arthur",
    "ashley",
    "barbara",
    "benjamin",
    "betty",
    "beverly",
    "billy",
    "bobby",
    "bonnie",
    "brandon",
    "brenda",
    "brian",
    "bruce",
    "carl",
    "carlos",
    "carol",
    "carolyn",
    "catherine",
    "charles",
    "cheryl",
    "chris",
    "christina",
    "christine",
    "christopher",
    "clarence",
    "craig",
    "cynthia",
    "daniel",
    "david",
    "deborah",
    "debra",
    "denise",
    "dennis",
    "diana",
    "diane",
    "donald",
    "donna",
    "doris",
    "dorothy",
    "douglas",
    "earl",
    "edward",
    "elizabeth",
    "emily",
    "eric",
    "ernest",
    "eugene",
    "evelyn",
    "frances",
    "frank",
    "fred",
    "gary",
    "george",
    "gerald",
    "gloria",
    "gregory",
    "harold",
    "harry",
    "heather",
    "helen",
    "henry",
    "howard",
    "irene",
    "jack",
    "jacqueline",
    "james",
    "jane",
    "janet",
    "janice",
    "jason",
    "jean",
    "jeffrey",
    "jennifer",
    "jeremy",
    "jerry",
    "jesse",
    "jessica",
    "jimmy",
    "joan",
    "joe",
    "john",
    "johnny",
    "jonathan",
    "jose",
    "joseph",
    "joshua",
    "joyce",
    "juan",
    "judith",
    "judy",
    "julia",
    "julie",
    "justin",
    "karen",
    "katherine",
    "kathleen",
    "kathryn",
    "kathy",
    "keith",
    "kelly",
    "kenneth",
    "kevin",
    "kimberly",
    "larry",
    "laura",
    "lawrence",
    "lillian",
    "linda",
    "lisa",
    "lois",
    "lori",
    "louis",
    "louise",
    "margaret",
    "maria",
    "marie",
    "marilyn",
    "mark",
    "martha",
    "martin",
    "mary",
    "matthew",
    "melissa",
    "michael",
    "michelle",
    "mildred",
    "nancy",
    "nicholas",
    "nicole",
    "norma",
    "pamela",
    "patricia",
    "patrick",
    "paul",
    "paula",
    "peter",
    "philip",
    "phillip",
    "phyllis",
    "rachel",
    "ralph",
    "randy",
    "raymond",
    "rebecca",
    "richard",
    "robert",
    "robin",
    "roger",
    "ronald",
    "rose",
    "roy",
    "ruby",
    "russell",
    "ruth",
    "ryan",
    "samuel",
    "sandra",
    "sara",
    "sarah",
    "scott",
    "sean",
    "sharon",
    "shawn",
    "shirley",
    "stephanie",
    "stephen",
    "steve",
    "steven",
    "susan",
    "tammy",
    "teresa",
    "terry",
    "theresa",
    "thomas",
    "timothy",
    "tina",
    "todd",
    "victor",
    "virginia",
    "walter",
    "wanda",
    "wayne",
    "william",
    "willie",
];

/// Spellings and forms of one name among [`COMMON`] that the nickname
/// table does not hold (Sara and Sarah, Maria and Marie, Kathryn and
/// Katherine): every pair of common names that [`super::compare::name_level`]
/// finds alike, checked by hand, is either in one group here or in
/// [`GROUPS`], or two names.
const SPELLINGS: &[&[&str]] = &[
    &["ann", "anna", "anne", "annie"],
    &["anthony", "antonio"],
    &["carl", "carlos", "charles"],
    &["carol", "carolyn"],
    &["catherine", "katherine", "kathryn", "kathleen"],
    &["christina", "christine", "chris"],
    &["deborah", "debra"],
    &["diana", "diane"],
    &["jeremy", "jerry"],
    &["joseph", "jose"],
    &["julia", "julie"],
    &["maria", "marie", "mary"],
    &["philip", "phillip"],
    &["sara", "sarah"],
    &["stephen", "steven"],
    &["teresa", "theresa"],
];

/// Whether `a` and `b` (folded, different) are two given names: both
/// among the commonest names, and not forms of one (a nickname of the
/// other, a spelling of it, or a nickname of a spelling). The comparison
/// asks it only of names more than one edit apart.
pub fn two_names(a: &str, b: &str) -> bool {
    let common = |n: &str| COMMON.binary_search(&n).is_ok();
    if !common(a) || !common(b) {
        return false;
    }
    let (fa, fb) = (forms(a), forms(b));
    !fa.iter().any(|x| fb.iter().any(|y| x == y || nicknames(x, y)))
}

/// A name and its other spellings.
fn forms(name: &str) -> Vec<&str> {
    let spellings = SPELLINGS
        .iter()
        .find(|g| g.contains(&name))
        .copied()
        .unwrap_or_default();
    std::iter::once(name).chain(spellings.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_go_both_ways_within_a_group_only() {
        assert!(nicknames("bob", "robert"));
        assert!(nicknames("robert", "bobby"));
        assert!(nicknames("liz", "beth"));
        assert!(!nicknames("bob", "william"));
        assert!(!nicknames("jules", "julia"));
    }

    #[test]
    fn common_names_alike_in_spelling_are_two_unless_forms_of_one() {
        assert!(two_names("ronald", "donald"));
        assert!(two_names("michelle", "michael"));
        assert!(two_names("mark", "mary"));
        assert!(!two_names("sara", "sarah"));
        // Kathy is Katherine's, and Kathryn is a spelling of Katherine.
        assert!(!two_names("kathy", "kathryn"));
        assert!(!two_names("bobby", "robert"));
        // A typo is no common name.
        assert!(!two_names("ronald", "ronlad"));
    }

    #[test]
    fn the_tables_hold_folded_names_and_the_spellings_are_common() {
        let folded = |name: &str| crate::persons::subject::fold(name).as_deref() == Some(name);
        for group in GROUPS.iter().chain(SPELLINGS) {
            assert!(group.iter().all(|n| folded(n)), "{group:?}");
        }
        assert!(COMMON.iter().all(|n| folded(n)));
        assert!(COMMON.windows(2).all(|w| w[0] < w[1]), "sorted, for the binary search");
        assert!(SPELLINGS.iter().flat_map(|g| g.iter()).all(|n| COMMON.contains(n)));
    }
}
